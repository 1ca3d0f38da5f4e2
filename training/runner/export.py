"""Export job (``task: "export"``): merge a LoRA into its base, optionally quantise, and
write a Hugging Face model directory that the transformers engine serves as it is.

Quantisation uses torchao through transformers' ``TorchAoConfig``: ``"int8"`` is int8
dynamic activations with int8 per-row weights (``Int8DynamicActivationInt8WeightConfig``)
on every ``nn.Linear`` except the output head (transformers leaves the head out by
default; it is the layer most sensitive to rounding). transformers writes the tensor
subclasses flattened into ``model.safetensors`` with torchao metadata, and
``config.json`` carries ``quantization_config`` (``quant_method: torchao``), so a plain
``AutoModelForCausalLM.from_pretrained(out_dir)`` loads the model back quantised; the
loader needs torchao installed, nothing else.

Why a round trip through a full-precision directory: ``TorchAoConfig`` is applied while
weights load, which is also what attaches the quantizer that ``save_pretrained`` uses to
serialise the quantised tensors. Quantising the merged model in memory would need
transformers' private quantizer plumbing; the round trip costs one extra write of the
merged weights.

What int8 buys on CPU is size, not speed: the engine runs eagerly, and torchao's CPU int8
linear (no torch.compile) converts the weight on every call. Measured on a 4-layer,
2048-wide Llama, one thread: decode step 229 ms in float32, 1400 ms int8 dynamic, 890 ms
int8 weight-only (torch.ao's deprecated ``quantize_dynamic`` ran at 95 ms, but its
modules do not serialise into a Hugging Face directory).

On CUDA (``device="cuda"``) the same torchao scheme runs on the GPU (int8 matmuls through
``torch._int_mm``). It is not exercised by the tests here (no GPU in CI). For vLLM, the
maintained int8 path is llm-compressor's W8A8 (compressed-tensors format, loaded natively
by vLLM); that library is not a dependency, so it is not offered.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

IGNORE = -100  # label of positions that carry no loss
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
# Files of the base directory that the export writes itself (and never copies).
WRITTEN = {"config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json"}
QUANTIZE_CHOICES = ("int8",)
SCORE_BATCH = 8


class ExportReport(TypedDict):
    """What an export measured: sizes in bytes, held-out losses (None without held-out rows)
    and how the weights were quantised (``{"method": None}`` when they were not)."""

    bytes: int
    base_bytes: int
    adapter_bytes: int
    dtype: str
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    heldout_tokens: int
    quantization: dict[str, Any]


@dataclass(frozen=True)
class Example:
    """A tokenized held-out row; ``labels[i]`` is ``input_ids[i]`` on assistant tokens,
    else IGNORE (the same shape as the runner's training examples)."""

    input_ids: list[int]
    labels: list[int]


def run_export(
    model_dir: Path,
    adapter_dir: Path | None,
    out_dir: Path,
    *,
    quantize: str | None,
    heldout: Path | None,
    device: str = "cpu",
    max_seq_len: int = 1024,
) -> ExportReport:
    """Merge ``adapter_dir`` (a peft LoRA, or None for the base alone) into the base at
    ``model_dir``, quantise when ``quantize`` is ``"int8"``, and write a loadable model
    directory to ``out_dir`` (weights, config, tokenizer, chat template, generation config).

    ``heldout_loss_before`` is base+adapter unmerged in float32; ``heldout_loss_after`` is
    the exported directory loaded back with ``from_pretrained`` (float32 compute, as the
    engine loads it on CPU): both are mean cross-entropy over the assistant tokens of the
    chat rows in ``heldout``. Raises ValueError for an unknown ``quantize``.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {QUANTIZE_CHOICES} or None, not {quantize!r}")
    from transformers import AutoConfig, AutoTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    examples = encode_heldout(tokenizer, heldout, max_seq_len) if heldout else []
    save_dtype = checkpoint_dtype(AutoConfig.from_pretrained(model_dir, local_files_only=True))

    model = _load(model_dir, dev, adapter_dir)
    before, tokens = heldout_loss(model, examples, _pad_id(tokenizer), dev)
    if adapter_dir is not None:
        model = model.merge_and_unload()
    model.to(save_dtype)
    if quantize is None:
        model.save_pretrained(out_dir)
        quantization: dict[str, Any] = {"method": None}
    else:
        with tempfile.TemporaryDirectory(prefix=".merged-", dir=out_dir.parent) as tmp:
            model.save_pretrained(tmp)
            del model  # the merged copy is on disk; free it before loading the quantised one
            _quantize(Path(tmp), out_dir, save_dtype, dev)
    _copy_side_files(model_dir, out_dir)

    exported = _load(out_dir, dev, None)
    after, _ = heldout_loss(exported, examples, _pad_id(tokenizer), dev)
    if quantize is not None:
        quantization = {**_describe_quantization(exported), "scheme": quantize}
    return ExportReport(
        bytes=weights_bytes(out_dir),
        base_bytes=weights_bytes(model_dir),
        adapter_bytes=weights_bytes(adapter_dir) if adapter_dir else 0,
        dtype=str(save_dtype).removeprefix("torch."),
        heldout_loss_before=before,
        heldout_loss_after=after,
        heldout_tokens=tokens,
        quantization=quantization,
    )


def checkpoint_dtype(config: Any) -> torch.dtype:
    """The dtype the base checkpoint declares (float32 when it declares none): the export
    keeps it, so a bf16 base does not come out twice its size."""
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if isinstance(declared, torch.dtype) else torch.float32


def _load(model_dir: Path, device: torch.device, adapter_dir: Path | None) -> Any:
    """The model at ``model_dir`` in float32 on ``device`` (with the adapter unmerged)."""
    from transformers import AutoModelForCausalLM

    # Typed as a plain Module: PreTrainedModel.to is wrapped with functools.wraps, which
    # mypy reads as an unbound function.
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=torch.float32
    )
    model.to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=False)
    return model.eval()


def _quantize(merged_dir: Path, out_dir: Path, dtype: torch.dtype, device: torch.device) -> None:
    """Load ``merged_dir`` through torchao int8 (dynamic activations, int8 weights) and save
    the quantised model (safetensors with torchao metadata) to ``out_dir``."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    config = TorchAoConfig(Int8DynamicActivationInt8WeightConfig())
    model = AutoModelForCausalLM.from_pretrained(
        merged_dir,
        local_files_only=True,
        dtype=dtype,
        device_map=str(device),
        quantization_config=config,
    )
    model.save_pretrained(out_dir)


def _describe_quantization(model: torch.nn.Module) -> dict[str, Any]:
    """Library, scheme and how many linear layers hold quantised weights."""
    import torchao

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    quantised = [m for m in linears if type(m.weight) not in (torch.nn.Parameter, torch.Tensor)]
    return {
        "method": "torchao",
        "library": f"torchao {torchao.__version__}",
        "config": "Int8DynamicActivationInt8WeightConfig",
        "format": "safetensors",
        "quantized_linear": len(quantised),
        "linear": len(linears),
    }


def _copy_side_files(model_dir: Path, out_dir: Path) -> None:
    """Copy the base's tokenizer, chat template, generation config and other small files
    (everything at the top level but weights and config.json)."""
    for path in model_dir.iterdir():
        if not path.is_file() or path.name.startswith(".") or path.name in WRITTEN:
            continue
        if path.name.endswith(WEIGHT_SUFFIXES):
            continue
        shutil.copy2(path, out_dir / path.name)


def weights_bytes(model_dir: Path) -> int:
    """Total size of the weight files at the top level of ``model_dir``."""
    return sum(
        p.stat().st_size
        for p in model_dir.iterdir()
        if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)
    )


# --- held-out scoring -------------------------------------------------------------------
# A small self-contained encoder; the runner's data module (load_examples) yields the same
# Example shape and can replace encode_heldout.


def read_rows(path: Path) -> Iterator[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _render(tokenizer: Any, messages: list[dict[str, Any]], gen: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen))


def encode_chat(tokenizer: Any, messages: list[dict[str, Any]], max_len: int) -> Example:
    """Token ids of the rendered chat with labels on assistant messages only: an assistant
    message's characters run from the end of the prompt rendered with a generation prompt
    to the end of the chat rendered up to it (trailing whitespace excluded)."""
    text = _render(tokenizer, messages, gen=False)
    spans = []
    for i, message in enumerate(messages):
        if message.get("role") == "assistant" and message.get("weight", 1):
            start = len(_render(tokenizer, messages[:i], gen=True)) if i else 0
            spans.append((start, len(_render(tokenizer, messages[: i + 1], gen=False).rstrip())))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])[:max_len]
    labels = [
        token if end > begin and any(a <= begin < b for a, b in spans) else IGNORE
        for token, (begin, end) in zip(ids, enc["offset_mapping"], strict=False)
    ]
    return Example(ids, labels)


def encode_heldout(tokenizer: Any, path: Path, max_len: int) -> list[Example]:
    """The chat rows (``messages``) of a JSONL file that have assistant tokens to score."""
    examples = [encode_chat(tokenizer, row["messages"], max_len) for row in read_rows(path)]
    return [e for e in examples if any(label != IGNORE for label in e.labels)]


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


@torch.no_grad()
def heldout_loss(
    model: Any, examples: Sequence[Example], pad_id: int, device: torch.device
) -> tuple[float | None, int]:
    """Mean next-token cross-entropy over every labelled token of ``examples`` and the
    number of such tokens; (None, 0) without examples."""
    total, count = 0.0, 0
    for start in range(0, len(examples), SCORE_BATCH):
        batch = examples[start : start + SCORE_BATCH]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        for row, e in enumerate(batch):
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
            labels[row, : len(e.labels)] = torch.tensor(e.labels)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        shifted = labels[:, 1:].to(device)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)),
            shifted.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total += float(loss)
        count += int((shifted != IGNORE).sum())
    return (total / count if count else None), count
