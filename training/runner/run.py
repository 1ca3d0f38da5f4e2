"""One run from a spec file: set up, train (or export), report; errors become an event
and exit 1."""

from __future__ import annotations

import logging
import os
import traceback
from pathlib import Path
from typing import Any

from training.runner.model import Dist, init_distributed
from training.runner.report import LocalReporter, PortalReporter, Reporter, Superseded
from training.runner.spec import Spec, load_spec

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_SUPERSEDED = 0, 1, 3
ENV_VARIABLE = "OPENMAAS_RUN_TOKEN"  # where the agent puts the bearer token


class QuietReporter:
    """What ranks other than 0 report to: nothing."""

    cancelled = False

    def event(self, event: dict[str, Any], progress: float | None = None) -> None:
        return None

    def flush(self) -> None:
        return None

    def checkpoint(self, step: int, metrics: dict[str, Any], directory: Path) -> None:
        return None

    def result(self, body: dict[str, Any], directory: Path) -> None:
        return None


def make_reporter(spec: Spec, dist: Dist) -> Reporter:
    if not dist.main:
        return QuietReporter()
    if spec.portal:
        return PortalReporter(spec.portal, os.environ.get(ENV_VARIABLE, ""))
    return LocalReporter(spec.output_dir)


def run_spec(path: Path) -> int:
    """Run the job of ``spec.json`` at ``path``; returns the process exit code."""
    spec = load_spec(path)
    dist = init_distributed(spec)
    reporter = make_reporter(spec, dist)
    try:
        if spec.task == "export":
            return export(spec, reporter)
        return train(spec, dist, reporter)
    except Superseded as exc:
        log.warning("superseded: %s", exc)
        return EXIT_SUPERSEDED
    except Exception as exc:
        log.exception("the run failed")
        _report_failure(reporter, exc)
        return EXIT_FAILED


def train(spec: Spec, dist: Dist, reporter: Reporter) -> int:
    """Build the trainer and run it to the end or a cancel."""
    from training.runner.train import Trainer

    trainer = Trainer(spec, dist)
    if dist.main:
        what = f"{spec.method} {spec.adapter.type}, {trainer.total_steps} steps"
        reporter.event(_message("info", f"training started: {what}"), 0.0)
    trainer.run(reporter)
    reporter.flush()
    return EXIT_OK


EXPORT_DIR = "export"
ADAPTER_DIR = "adapter"  # where the portal puts the LoRA to merge, under files_dir


def export(spec: Spec, reporter: Reporter) -> int:
    """Merge the adapter under ``files_dir/adapter/`` into the base, quantise as
    ``spec.export["quantize"]`` says, score the held-out rows (``validation_file``) before
    and after, and report the exported directory as the result: ``metrics`` are the
    report's numbers, ``export`` its quantisation and dtype, ``history`` empty."""
    from training.runner.export import run_export

    quantize = (spec.export or {}).get("quantize")
    adapter = spec.files_dir / ADAPTER_DIR
    heldout = spec.files_dir / spec.validation_file if spec.validation_file else None
    out = spec.output_dir / EXPORT_DIR
    what = f"quantize={quantize}" if quantize else "no quantisation"
    reporter.event(_message("info", f"export started: merge the LoRA, {what}"), 0.0)
    report = run_export(
        spec.model_dir,
        adapter if (adapter / "adapter_config.json").exists() else None,
        out,
        quantize=quantize,
        heldout=heldout,
        device=spec.device,
        max_seq_len=spec.hyperparameters.max_seq_len,
    )
    # The report's numbers go as result metrics (finite numbers or null), the rest as "export".
    metrics = {
        "bytes": report["bytes"],
        "base_bytes": report["base_bytes"],
        "adapter_bytes": report["adapter_bytes"],
        "heldout_loss_before": report["heldout_loss_before"],
        "heldout_loss_after": report["heldout_loss_after"],
        "heldout_tokens": report["heldout_tokens"],
    }
    summary = ", ".join(f"{k}={v}" for k, v in metrics.items())
    reporter.event(_message("info", f"export finished: {summary}"), 1.0)
    body = {
        "metrics": metrics,
        "history": [],
        "export": {"dtype": report["dtype"], "quantization": report["quantization"]},
    }
    reporter.result(body, out)
    reporter.flush()
    return EXIT_OK


def _report_failure(reporter: Reporter, exc: BaseException) -> None:
    tail = "".join(traceback.format_exception(exc))[-4000:]
    try:
        reporter.event(_message("error", f"{type(exc).__name__}: {exc}\n{tail}"))
        reporter.flush()
    except Exception:  # the portal is unreachable too: the agent reports the log tail
        log.exception("could not report the failure")


def _message(level: str, text: str) -> dict[str, Any]:
    return {"type": "message", "level": level, "message": text}
