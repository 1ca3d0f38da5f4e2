"""The engine keeps torchao only for torchao-quantized checkpoints (an int8 export is
served through it in tests/training/test_export.py)."""

from __future__ import annotations

import json
from pathlib import Path

from compute.engines.optional_imports import quant_method


def test_quant_method_is_read_from_the_checkpoints_config(tmp_path: Path) -> None:
    assert quant_method(tmp_path) is None  # no config.json
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert quant_method(tmp_path) is None
    quantized = {"model_type": "llama", "quantization_config": {"quant_method": "torchao"}}
    (tmp_path / "config.json").write_text(json.dumps(quantized))
    assert quant_method(tmp_path) == "torchao"
    (tmp_path / "config.json").write_text("{not json")
    assert quant_method(tmp_path) is None
