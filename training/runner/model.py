"""Loading the base model, wrapping it for LoRA or full fine-tuning, and the process
group when the runner is one of several ``torch.distributed.run`` processes."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.runner.spec import Spec

ATTENTION_PARTS = ("attn", "attention")  # substrings of an attention block's module name


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks (``world`` 1 without torch.distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(spec: Spec) -> Dist:
    """Join the process group when started by ``torch.distributed.run`` with WORLD_SIZE>1:
    nccl on CUDA, gloo on CPU. A single process needs no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if spec.device == "cuda":
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if spec.device == "cuda" else "gloo")
    return Dist(rank, world, local)


def device_of(spec: Spec, dist: Dist) -> torch.device:
    return torch.device(f"cuda:{dist.local_rank}" if spec.device == "cuda" else "cpu")


def default_targets(model: torch.nn.Module) -> list[str]:
    """The names of the linear projections inside attention blocks (q/k/v/o_proj on Llama,
    Qwen, Mistral; c_attn/c_proj on GPT-2; query_key_value/dense on GPT-NeoX, Falcon)."""
    linear: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D

        linear += (Conv1D,)
    except ImportError:  # pragma: no cover - every supported transformers has it
        pass
    names = set()
    for name, module in model.named_modules():
        parents = name.split(".")[:-1]
        attention = any(part in p for p in parents for part in ATTENTION_PARTS)
        if isinstance(module, linear) and attention:
            names.add(name.split(".")[-1])
    if not names:
        raise ValueError("found no attention projection to put LoRA on; name target_modules")
    return sorted(names)


def load_tokenizer(spec: Spec) -> Any:
    tokenizer = AutoTokenizer.from_pretrained(spec.model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _weights_dtype(spec: Spec) -> torch.dtype:
    """bf16 weights only for a frozen base under LoRA; full fine-tuning keeps fp32 master
    weights (AdamW updates in bf16 lose most small steps) and computes in bf16 autocast."""
    bf16 = spec.device == "cuda" and spec.dtype == "bfloat16" and spec.adapter.type == "lora"
    return torch.bfloat16 if bf16 else torch.float32


def load_base(spec: Spec, source: Any = None) -> torch.nn.Module:
    model = AutoModelForCausalLM.from_pretrained(
        source or spec.model_dir, dtype=_weights_dtype(spec)
    )
    model.config.use_cache = False
    return model


def build_model(spec: Spec, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The trainable model on ``device`` and, for DPO with full fine-tuning, a frozen copy of
    the base as reference (LoRA's reference is the same model with its adapter disabled).
    A resumed run loads the checkpoint's adapter or weights."""
    resume = spec.resume_dir
    full = spec.adapter.type == "full"
    model = load_base(spec, resume if full and resume else None)
    reference = None
    if full and spec.method == "dpo":
        reference = copy.deepcopy(model) if not resume else load_base(spec)
        reference.requires_grad_(False).eval().to(device)
    if not full:
        if resume:
            model = PeftModel.from_pretrained(model, resume, is_trainable=True)
        else:
            a = spec.adapter
            config = LoraConfig(
                r=a.r,
                lora_alpha=a.alpha,
                lora_dropout=a.dropout,
                target_modules=a.target_modules or default_targets(model),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, config)
    return model.to(device), reference
