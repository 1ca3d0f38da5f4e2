"""Checkpoint directories: the weights (a peft adapter or full weights) plus
``trainer_state.pt`` with everything a resumed run needs to continue bit for bit."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch and (when present) every CUDA device, in
    types that ``torch.load(weights_only=True)`` accepts."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # legacy=True: (kind, keys, pos, has_gauss, gauss)
    kind, keys, pos, has_gauss, gauss = numpy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys).copy()), pos, has_gauss, gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`rng_state`."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(model: Any, directory: Path, tokenizer: Any = None) -> None:
    """``save_pretrained`` of the (unwrapped) model: adapter_config.json and
    adapter_model.safetensors for a peft model, config.json and model.safetensors for
    full weights; the tokenizer too when given (full weights are served on their own)."""
    model.save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)


def save_checkpoint(
    directory: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: dict[str, Any],
    tokenizer: Any = None,
) -> Path:
    """Write a complete checkpoint to ``directory`` (replaced if present).

    ``position`` holds ``step``, ``epoch`` and ``batch`` (micro-batches done in that
    epoch). The files go to a sibling ``.tmp`` directory that is renamed at the end, so a
    run killed while writing never leaves a half checkpoint under the final name.
    """
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp, tokenizer)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        **position,
    }
    torch.save(state, tmp / STATE_FILE)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
    return directory


def load_state(directory: Path) -> dict[str, Any]:
    """Read ``trainer_state.pt`` (tensors and plain values only: ``weights_only``)."""
    state: dict[str, Any] = torch.load(directory / STATE_FILE, weights_only=True)
    return state
