"""Keep transformers from importing optional packages a process does not use.

transformers imports torchao (its quantizer registry) and scipy (an object-detection loss)
whenever they are installed, which costs every engine or runner start a second or more of
CPU before the model loads. Neither is needed unless the checkpoint is torchao-quantized
(an int8 export) or the process makes one, so :func:`skip_unneeded_imports` marks them
absent first. Light on purpose: no torch or transformers here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import cast

OPTIONAL = ("scipy", "torchao")


def skip_unneeded_imports(model_dir: Path, *, needs_torchao: bool = False) -> None:
    """Mark scipy, and torchao unless ``needs_torchao`` or the model at ``model_dir`` is
    torchao-quantized, as absent: ``sys.modules[name] = None`` makes an import of it raise
    and ``importlib.util.find_spec`` answer ``None``, which transformers reads as "not
    installed". Call before the first transformers import; after it, nothing changes.
    """
    if "transformers" in sys.modules:
        return
    keep = needs_torchao or quant_method(model_dir) == "torchao"
    # Typeshed types sys.modules without the None that marks a module absent.
    modules = cast("dict[str, ModuleType | None]", sys.modules)
    for name in OPTIONAL:
        if not (keep and name == "torchao"):
            modules.setdefault(name, None)


def quant_method(model_dir: Path) -> str | None:
    """The checkpoint's ``quantization_config.quant_method`` in config.json, if any."""
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    quant = config.get("quantization_config") if isinstance(config, dict) else None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    return str(method) if method is not None else None
