"""Multi-LoRA throughput of the CPU engine: one batch mixing adapters versus single-model
batches (``python -m tests.bench.engine_lora``; a few minutes on two cores).

A random Llama (hidden 512, 8 layers, the tiny test tokenizer) is served in-process by the
engine's own scheduler; LoRA adapters of rank 16 on q/k/v/o and the MLP projections. Every
case generates ``--tokens`` greedy tokens for ``--batch`` prompts submitted at once:

* ``base, no peft``: the base model before any adapter was ever loaded;
* ``base, adapters loaded``: the same requests after loading (peft layers in place, unused);
* ``one adapter``: every row uses the same adapter;
* ``mixed``: rows spread over the base and the adapters, in one batch (what the engine does);
* ``grouped``: the same mixed rows, run as one batch per model, one after the other (what
  grouping batches by adapter would do at best).

Measured (2026-11-24, 2 cores shared with other work, 1 thread, batch 8, 32 tokens, 3
adapters, medians of 5 interleaved rounds), tokens/s, two runs (load 5-7, then 3-5):
base without peft 60.0 | 100.3; base rows with adapters loaded 59.5 | 71.7; one adapter
40.2 | 59.4 (after the single-adapter fast path); mixed 29.0 | 38.2; grouped 15.8 | 27.5.
Mixing in one batch was 1.4-2.2x grouping by adapter in every run so far.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch

from compute.engines.transformers.engine import Engine
from compute.engines.transformers.responses import collect
from compute.engines.transformers.sampling import SamplingParams
from compute.engines.transformers.server import load_engine, parse_args

PROMPTS = [
    "Hello there, how are you?",
    "Summarise: batching makes inference faster.",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers: 1 2 3 4 5",
    "Open models can be hosted on your own machines.",
    "Please summarise the following paragraph.",
    "今天天气很好，我们去公园散步。",
    "机器学习模型需要大量的数据来训练。",
]


def build_model(out: Path) -> None:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.tiny_model import build_tiny_model

    build_tiny_model(out)  # tokenizer and chat template; the weights are replaced below
    tokenizer = AutoTokenizer.from_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=1376,
        num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=8,
        max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(out)


def build_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=16, lora_alpha=32, target_modules=modules, task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    model.save_pretrained(out)
    return out


async def run_batch(engine: Engine, rows: list[str | None], tokens: int) -> int:
    """Submit one prompt per row at once (row = adapter key or None); tokens generated."""
    params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    seqs = [
        engine.submit(engine.encode_text(PROMPTS[i % len(PROMPTS)]), params, key)
        for i, key in enumerate(rows)
    ]
    results = await asyncio.gather(*(collect(s) for s in seqs))
    return sum(len(r.tokens) for r in results)


async def rate(engine: Engine, batches: list[list[str | None]], tokens: int) -> float:
    """Tokens/s of running ``batches`` one after another."""
    start = time.perf_counter()
    made = 0
    for rows in batches:
        made += await run_batch(engine, rows, tokens)
    return made / (time.perf_counter() - start)


async def bench(model_dir: Path, adapters: list[Path], args: argparse.Namespace) -> dict:
    """Median tokens/s per case; the cases take turns in every round, so load from other
    work on the host falls on all of them alike. ``base, no peft`` runs on a second engine
    over the same weights that never loads an adapter."""
    argv = ["--model", str(model_dir), "--served-model-name", "bench",
            "--max-batch-size", str(args.batch), "--max-model-len", "1024"]  # fmt: skip
    plain, engine = load_engine(parse_args(argv)), load_engine(parse_args(argv))
    plain.scheduler.start()
    engine.scheduler.start()
    n, t = args.batch, args.tokens
    try:
        for i, path in enumerate(adapters):
            await engine.load_adapter(f"a{i}", str(path))
        keys = [engine.adapters.served[f"a{i}"].key for i in range(len(adapters))]
        models: list[str | None] = [None, *keys]
        mixed = [models[i % len(models)] for i in range(n)]
        cases: dict[str, tuple[Engine, list[list[str | None]]]] = {
            "base, no peft": (plain, [[None] * n]),
            "base, adapters loaded": (engine, [[None] * n]),
            "one adapter": (engine, [[keys[0]] * n]),
            "mixed": (engine, [mixed]),
            "grouped": (engine, [[m for m in mixed if m == model] for model in models]),
        }
        for runner, batches in cases.values():  # warm-up
            await rate(runner, batches, 4)
        rates: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, (runner, batches) in cases.items():
                rates[name].append(await rate(runner, batches, t))
    finally:
        plain.scheduler.stop()
        engine.scheduler.stop()
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--adapters", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_model(root / "model")
        adapters = [build_adapter(root / "model", root / f"a{i}", i) for i in range(args.adapters)]
        results = asyncio.run(bench(root / "model", adapters, args))
    base = results["base, no peft"]
    print(f"batch {args.batch}, {args.tokens} tokens each, {args.adapters} adapters "
          f"(mixed = base + adapters round-robin), {args.threads} thread(s)")  # fmt: skip
    for name, rate in results.items():
        print(f"{name:24s} {rate:8.1f} tokens/s  ({rate / base:5.2f}x base)")


if __name__ == "__main__":
    main()
