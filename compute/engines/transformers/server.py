"""Command line, model loading and serving until SIGTERM (``main`` is the entry point)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from aiohttp import web

from compute.engines.optional_imports import skip_unneeded_imports
from compute.engines.transformers.api import build_app
from compute.engines.transformers.engine import Engine
from compute.engines.transformers_adapter import api_key_from_env
from compute.engines.watermark import (
    DEFAULT_DELTA,
    DEFAULT_GAMMA,
    KEY_ENV,
    MAX_DELTA,
    MAX_GAMMA,
    MIN_GAMMA,
    Watermark,
    key_bytes,
)

log = logging.getLogger(__name__)

PROG = "python -m compute.engines.transformers_server"
DESCRIPTION = (
    "CPU inference engine: an OpenAI-compatible HTTP server over a local Hugging Face model."
)


def resolve_dtype(name: str, device: torch.device, config: Any) -> torch.dtype:
    """``auto``: float32 on CPU (fast and exact there); on GPU the checkpoint's 16-bit type."""
    if name != "auto":
        return getattr(torch, name)
    if device.type == "cpu":
        return torch.float32
    declared = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if declared in (torch.float16, torch.bfloat16) else torch.float32


def watermark_from(args: argparse.Namespace) -> Watermark | None:
    """The watermark ``--watermark`` asks for, keyed by ``OPENMAAS_WATERMARK_KEY`` (the
    environment: argv is visible to ``ps``); None when off. SystemExit (status 2, before
    the model is loaded when called from :func:`main`) without a key."""
    if not args.watermark:
        return None
    secret = os.environ.get(KEY_ENV, "").strip()
    if not secret:
        print(
            f"error: --watermark needs {KEY_ENV} (the deployment's watermark key; the node "
            "agent sets it)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return Watermark(key_bytes(secret), args.watermark_gamma, args.watermark_delta)


def load_engine(args: argparse.Namespace) -> Engine:
    """Load the model and tokenizer from the local directory and build the engine."""
    skip_unneeded_imports(Path(args.model))
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise SystemExit(f"error: {model_dir} is not a model directory (no config.json)")
    device = torch.device(args.device)
    config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
    dtype = resolve_dtype(args.dtype, device, config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    # Typed as a plain Module: PreTrainedModel.to is wrapped with functools.wraps, which
    # mypy reads as an unbound function (the override still runs).
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(
        model_dir, local_files_only=True, dtype=dtype
    )
    model.to(device).eval()
    limit = getattr(config.get_text_config(), "max_position_embeddings", None) or 2048
    max_model_len = min(args.max_model_len or limit, limit)
    if args.max_model_len and args.max_model_len > limit:
        log.warning(
            "--max-model-len %d exceeds the model's %d positions; using %d",
            args.max_model_len,
            limit,
            limit,
        )
    return Engine(
        model,
        tokenizer,
        served_model_name=args.served_model_name,
        max_model_len=max_model_len,
        max_batch_size=args.max_batch_size,
        device=device,
        max_loras=args.max_loras,
        max_lora_rank=args.max_lora_rank,
        watermark=watermark_from(args),
    )


async def serve(engine: Engine, host: str, port: int, api_key: str) -> None:
    """Serve until SIGTERM/SIGINT, then stop the scheduler and close connections."""
    if not api_key:
        raise ValueError("the engine never serves without an API key")
    app = build_app(engine, api_key)
    # handler_cancellation: a client that hangs up cancels its handler, whose cleanup
    # cancels the sequence, so abandoned non-streamed requests stop generating too.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, handler_cancellation=True)
    await runner.setup()
    engine.scheduler.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("serving %s on http://%s:%d", engine.served_model_name, host, port)
        await stop.wait()
        log.info("shutting down")
    finally:
        # Stopping the scheduler first ends in-flight requests with a 503, so the runner's
        # cleanup does not wait on them.
        await asyncio.to_thread(engine.scheduler.stop)
        await runner.cleanup()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--model", required=True, help="local Hugging Face model directory")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--max-loras",
        type=int,
        default=8,
        help="LoRA adapters served at once next to the base model (0: no adapters)",
    )
    parser.add_argument(
        "--max-lora-rank", type=int, default=64, help="largest LoRA rank an adapter may have"
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=0,
        help="torch intra-op threads (0: torch's default). Small models on a busy host "
        "are faster with 1, since waiting on a descheduled worker thread dominates.",
    )
    parser.add_argument(
        "--watermark",
        action="store_true",
        help=f"plant the green-list text watermark (key from {KEY_ENV})",
    )
    parser.add_argument(
        "--watermark-gamma",
        type=float,
        default=DEFAULT_GAMMA,
        help="fraction of the vocabulary that is green at each step",
    )
    parser.add_argument(
        "--watermark-delta",
        type=float,
        default=DEFAULT_DELTA,
        help="logit bias added to green tokens",
    )
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max-batch-size must be at least 1")
    if args.max_model_len is not None and args.max_model_len < 1:
        parser.error("--max-model-len must be at least 1")
    if args.max_loras < 0:
        parser.error("--max-loras must be 0 or more")
    if args.max_lora_rank < 1:
        parser.error("--max-lora-rank must be at least 1")
    if args.num_threads < 0:
        parser.error("--num-threads must be 0 or more")
    if not MIN_GAMMA <= args.watermark_gamma <= MAX_GAMMA:
        parser.error(f"--watermark-gamma must be in [{MIN_GAMMA}, {MAX_GAMMA}]")
    if not 0 < args.watermark_delta <= MAX_DELTA:
        parser.error(f"--watermark-delta must be in (0, {MAX_DELTA}]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Never reach for the Hub: the model directory is all there is.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = parse_args(argv)
    api_key = api_key_from_env()
    if api_key is None:
        return 2
    watermark_from(args)  # no key: refuse before spending seconds on the model
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    engine = load_engine(args)
    try:
        asyncio.run(serve(engine, args.host, args.port, api_key))
    except OSError as exc:
        log.error("cannot serve on %s:%d: %s", args.host, args.port, exc)
        return 1
    return 0
