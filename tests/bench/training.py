"""Training throughput: the fine-tuning runner beside a bare transformers + peft loop.

``python -m tests.bench.training --output docs/benchmarks.md`` (``make bench-training``)
builds the demo model (``portal.demo.builder``, 1 training step: the weights do not matter
for speed), generates a chat dataset from the demo corpus (three conversations joined
under a system prompt per row), and trains LoRA on it twice per round: once with
:class:`training.runner.train.Trainer` (local reporting, its final checkpoint and
result included in the time) and once with a plain loop written here (forward with
labels, loss, backward, optimizer step). Same model, rows, order, LoRA settings, batch,
steps and seed. Tokens are the non-padding input tokens of the batches; each figure is
the median of ``--rounds`` rounds, the two loops taking turns. ``--device cuda --dtype
bfloat16`` runs the same on a GPU (bf16 base weights, fp32 adapters, bf16 autocast).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from tests.bench.gateway import cpu_model, load_average, memory_gib, write_section
from tests.training.runner_helpers import make_spec


@dataclass(frozen=True)
class Reading:
    loop: str
    tokens: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def generated_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` chat rows, each a system prompt and three demo-corpus conversations."""
    from portal.demo.builder import load_corpus

    corpus = [row["messages"] for row in load_corpus()]
    pick = random.Random(seed)
    rows = []
    for _ in range(n):
        messages = [{"role": "system", "content": "You are a helpful assistant."}]
        for conversation in pick.sample(corpus, 3):
            messages += conversation
        rows.append({"messages": messages})
    return rows


def spec_for(args: argparse.Namespace, tmp: Path, model_dir: Path, rows: list[Any]) -> Any:
    from training.runner.spec import parse_spec

    return parse_spec(
        make_spec(
            tmp,
            model_dir,
            rows=rows,
            seed=args.seed,
            device=args.device,
            dtype=args.dtype,
            adapter={"r": args.rank, "alpha": 2 * args.rank, "dropout": 0.0},
            hyperparameters={
                "n_epochs": 1,
                "batch_size": args.batch_size,
                "learning_rate": 2e-4,
                "max_seq_len": args.max_seq_len,
                "checkpoint_every": 10**6,
                "eval_every": 10**6,
            },
        )
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def run_runner(spec: Any) -> Reading:
    from training.runner.report import LocalReporter
    from training.runner.train import Trainer

    trainer = Trainer(spec)
    _sync(spec.device)
    started = time.perf_counter()
    trainer.run(LocalReporter(spec.output_dir))
    _sync(spec.device)
    return Reading("runner", trainer.progress.trained_tokens, time.perf_counter() - started)


def run_bare(spec: Any, rows: list[dict[str, Any]]) -> Reading:
    """The plain loop: the same rows in the same order, every token labelled."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = torch.device(spec.device)
    bf16 = spec.dtype == "bfloat16" and spec.device == "cuda"
    torch.manual_seed(spec.seed)
    tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
    model = AutoModelForCausalLM.from_pretrained(
        spec.model_dir, dtype=torch.bfloat16 if bf16 else torch.float32
    )
    config = LoraConfig(
        r=spec.adapter.r,
        lora_alpha=spec.adapter.alpha,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config).to(device)
    model.train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=spec.hyperparameters.learning_rate
    )
    max_len, size = spec.hyperparameters.max_seq_len, spec.hyperparameters.batch_size
    encoded = [
        tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"][
            :max_len
        ]
        for r in rows
    ]
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(spec.seed)).tolist()
    tokens = 0
    _sync(spec.device)
    started = time.perf_counter()
    for at in range(0, len(order), size):
        batch = [encoded[i] for i in order[at : at + size]]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    _sync(spec.device)
    return Reading("bare transformers + peft", tokens, time.perf_counter() - started)


def measure(args: argparse.Namespace, work: Path) -> dict[str, list[Reading]]:
    from portal.demo.builder import build_demo_model

    model_dir = build_demo_model(work / "model", steps=1, say=lambda _: None)
    rows = generated_rows(args.steps * args.batch_size, args.seed)
    readings: dict[str, list[Reading]] = {"runner": [], "bare": []}
    for round_ in range(args.rounds + 1):  # round 0 warms caches and allocators up
        spec = spec_for(args, work / f"round-{round_}", model_dir, rows)
        bare, runner = run_bare(spec, rows), run_runner(spec)
        if round_:
            readings["bare"].append(bare)
            readings["runner"].append(runner)
        print(f"round {round_}: runner {runner.rate:,.0f} tok/s, bare {bare.rate:,.0f} tok/s")
    return readings


def table(readings: dict[str, list[Reading]]) -> list[str]:
    bare = statistics.median(r.rate for r in readings["bare"])
    lines = [
        "| loop | tokens per run | seconds (median) | tokens/s (median) | vs bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for key in ("bare", "runner"):
        runs = readings[key]
        rate = statistics.median(r.rate for r in runs)
        seconds = statistics.median(r.seconds for r in runs)
        name = runs[0].loop
        lines.append(
            f"| {name} | {runs[0].tokens:,} | {seconds:.2f} | {rate:,.0f} | {rate / bare:.1%} |"
        )
    return lines


def render(readings: dict[str, list[Reading]], before: str, args: argparse.Namespace) -> str:
    now = datetime.now(UTC)
    where = (
        f"{torch.cuda.get_device_name()} ({args.dtype})"
        if args.device == "cuda"
        else f"{os.cpu_count()} CPUs ({cpu_model()}), torch threads: {torch.get_num_threads()}"
    )
    lines = [
        f"## Training, {args.device} {args.dtype} (make bench-training, {now:%Y-%m-%d %H:%M})",
        "",
        f"Measured {now:%Y-%m-%d %H:%M} UTC on {where}, {memory_gib()} memory, Linux "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}. "
        f"Load average before the run: {before}; after: {load_average()}.",
        "",
        f"LoRA (r={args.rank}, q/k/v/o projections) on the demo model (`openmaas/demo-tiny` "
        f"architecture), {args.steps} steps of batch {args.batch_size}, rows of three demo "
        f"conversations (up to {args.max_seq_len} tokens), seed {args.seed}; median of "
        f"{args.rounds} rounds after a warm-up round. The runner's time includes its loss "
        "masks, metrics and token accuracy, the final checkpoint and the result; the bare "
        "loop is forward with labels, backward, step. Aim: runner ≥ 95% of bare.",
        "",
        *table(readings),
        "",
        "Reading: the two loops run the same forward and backward passes; the runner scores "
        "only the loss tokens (assistant turns: their logits alone are upcast and go through "
        "the cross-entropy and the accuracy's argmax), the bare loop every position, which "
        "is where the runner gains. On a busy machine single rounds vary by about ±20%, so "
        "only the medians of alternating rounds compare.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Runner vs bare transformers + peft loop.")
    parser.add_argument("--output", type=Path, help="markdown file to put the section into")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default torch's; 1 on a busy machine)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        readings = measure(args, Path(tmp))
    section = render(readings, before, args)
    print(section)
    if args.output:
        write_section(args.output, section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
