"""The runner's spec (``spec.json``): what to train, on which files, where to put results."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Hyperparameters:
    """Training knobs; ``batch_size`` is the micro-batch of one forward pass per process,
    so one optimizer step sees ``batch_size * gradient_accumulation_steps * world`` rows."""

    n_epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 2e-4
    beta: float = 0.1
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_seq_len: int = 1024
    checkpoint_every: int = 10
    eval_every: int = 10


@dataclass(frozen=True)
class Adapter:
    """``type`` "lora" (the other fields apply) or "full" (every weight trains)."""

    type: str = "lora"
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None


@dataclass(frozen=True)
class Spec:
    """The parsed ``spec.json``; paths are absolute, data files relative to ``files_dir``."""

    model_dir: Path
    files_dir: Path
    output_dir: Path
    train_file: str = ""
    job: str = ""
    attempt: int = 1
    task: str = "fine_tune"
    method: str = "supervised"
    portal: str | None = None
    validation_file: str | None = None
    hyperparameters: Hyperparameters = field(default_factory=Hyperparameters)
    adapter: Adapter = field(default_factory=Adapter)
    seed: int = 42
    device: str = "cpu"
    dtype: str = "float32"
    resume: dict[str, Any] | None = None
    # task "export" only: {"quantize": "int8" | None}
    export: dict[str, Any] | None = None

    @property
    def resume_dir(self) -> Path | None:
        """The checkpoint to resume from (``files_dir/<resume.dir>``), or None."""
        if not self.resume:
            return None
        return self.files_dir / str(self.resume.get("dir") or "resume")


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keep the keys ``cls`` knows: a newer portal may send more than this runner reads."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names and v is not None}


def parse_spec(data: dict[str, Any]) -> Spec:
    """Build a :class:`Spec` from the decoded JSON; raises ValueError on a bad spec."""
    required = ["model_dir", "files_dir", "output_dir"]
    if data.get("task", "fine_tune") != "export":
        required.append("train_file")  # an export reads the adapter, not training data
    for key in required:
        if not data.get(key):
            raise ValueError(f"spec has no {key!r}")
    values = _known(Spec, data)
    for key in ("model_dir", "files_dir", "output_dir"):
        values[key] = Path(data[key])
    values["hyperparameters"] = Hyperparameters(
        **_known(Hyperparameters, data.get("hyperparameters") or {})
    )
    values["adapter"] = Adapter(**_known(Adapter, data.get("adapter") or {}))
    spec = Spec(**values)
    _check(spec)
    return spec


def _check(spec: Spec) -> None:
    hp = spec.hyperparameters
    if spec.task not in ("fine_tune", "export"):
        raise ValueError(f"this runner does not do task {spec.task!r}")
    if spec.method not in ("supervised", "dpo"):
        raise ValueError(f"unknown method {spec.method!r}")
    if spec.adapter.type not in ("lora", "full"):
        raise ValueError(f"unknown adapter type {spec.adapter.type!r}")
    if spec.device not in ("cpu", "cuda") or spec.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"unsupported device/dtype {spec.device}/{spec.dtype}")
    positive = ("n_epochs", "batch_size", "gradient_accumulation_steps", "max_seq_len")
    for name in positive:
        if getattr(hp, name) < 1:
            raise ValueError(f"{name} must be at least 1")


def load_spec(path: Path) -> Spec:
    """Read and parse ``spec.json``."""
    return parse_spec(json.loads(Path(path).read_text(encoding="utf-8")))
