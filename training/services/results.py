"""A fine-tune's success: its result becomes a model in the hub and, when it is a LoRA
adapter whose base is deployed, a served model.

The hub repo is ``{owner}/{base name}-ft-{suffix or job short id}`` (private to the job's
owner; a taken name gets ``-2``…), its version the result files (moved to the repo's
content-addressed keys) with the base as ``base_version`` for an adapter; full weights
get the base's tokenizer and config files too, so the version is a loadable directory.
The card (README.md) carries the base, the datasets, the hyperparameters, the final
metrics and the loss curve as a Markdown table; the step metrics are also a
``fine-tune-results`` CSV file, as OpenAI's ``result_files``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import yaml

from datasets.services.files import create_result_file
from portal.errors import PlatformError
from portal.models import ModelVersion
from portal.services.registry import (
    StoredFile,
    create_private_repo,
    register_stored_version,
)
from portal.storage import model_blob_key, store
from training.models import FineTuneStatus, FineTuningJob, Task
from training.services import jobs, runs

logger = logging.getLogger(__name__)

CSV_HEADER = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json", ".pt")
MAX_CARD_ROWS = 200


def repo_name(job: FineTuningJob) -> str:
    tail = job.suffix or job.id.removeprefix("ftjob-")[:8].lower()
    return f"{job.base_version.repo.name}-ft-{tail}"


def succeed(job: FineTuningJob, pending: dict[str, Any]) -> str:
    """Register the result announced in ``pending``, write the metrics CSV, end the job
    as succeeded and try to serve the adapter; returns the fine-tuned model's name (an
    export's: :func:`succeed_export`)."""
    if job.task == Task.EXPORT:
        return succeed_export(job, pending)
    base = job.base_version
    owner = job.owner_user or job.owner_org
    name = jobs.fine_tuned_name(job)
    repo = create_private_repo(owner, repo_name(job), job.created_by, f"Fine-tune of {base}")
    # The platform writes the card; a README the runner's library saved is dropped.
    uploaded = [f for f in pending["files"] if f["path"] != "README.md"]
    for dropped in (f for f in pending["files"] if f["path"] == "README.md"):
        store().delete(runs.RESULT_BUCKET, dropped["object_key"])
    files = _move_result(job, repo.pk, uploaded)
    full = job.adapter.get("type") == "full"
    if full:
        files += _base_extras(base, repo.pk, {f.path for f in files})
    card = card_text(job, pending)
    files.append(_put(repo.pk, "README.md", card.encode()))
    version = register_stored_version(
        repo,
        files,
        config=_config(files, "config.json" if full else "adapter_config.json"),
        card_text=card,
        base_version=None if full else base,
        actor=job.created_by,
        message=f"fine-tuning job {job.id}",
        chat_template=base.has_chat_template,
    )
    result_file = _metrics_file(job, pending["history"])
    trained = pending["metrics"].get("trained_tokens")
    job.refresh_from_db()
    moved = jobs.finish(
        job,
        FineTuneStatus.SUCCEEDED,
        f"The job has successfully completed: {name} ({version})",
        fields={
            "fine_tuned_model": name,
            "trained_tokens": int(trained) if trained is not None else None,
            "result_version": version,
            "result_files": [result_file] if result_file else [],
            "progress": 1.0,
        },
    )
    if moved:
        _serve(job, version, name, full)
    return name


def succeed_export(job: FineTuningJob, pending: dict[str, Any]) -> str:
    """Register an export's directory as the next version of the source fine-tune's repo
    (full weights: no ``base_version``; the card records what it derives from, the
    quantisation, the sizes and the held-out losses) and end the job as succeeded with
    ``fine_tuned_model`` = that version (``owner/name@vN``), which deploys like any model."""
    source = job.source_job
    adapter = source.result_version if source is not None else None
    if adapter is None:
        raise PlatformError("The exported fine-tune's model is gone.", code="source_gone")
    repo = adapter.repo
    uploaded = [f for f in pending["files"] if f["path"] != "README.md"]
    for dropped in (f for f in pending["files"] if f["path"] == "README.md"):
        store().delete(runs.RESULT_BUCKET, dropped["object_key"])
    files = _move_result(job, repo.pk, uploaded)
    files += _base_extras(job.base_version, repo.pk, {f.path for f in files})
    card = export_card(job, adapter, pending)
    files.append(_put(repo.pk, "README.md", card.encode()))
    version = register_stored_version(
        repo,
        files,
        config=_config(files, "config.json"),
        card_text=card,
        base_version=None,
        actor=job.created_by,
        message=f"export job {job.id}",
        chat_template=job.base_version.has_chat_template,
    )
    name = str(version)
    report = {**pending.get("metrics", {}), **pending.get("export", {})}
    job.refresh_from_db()
    moved = jobs.finish(
        job,
        FineTuneStatus.SUCCEEDED,
        f"The export has successfully completed: {name}",
        fields={
            "fine_tuned_model": name,
            "result_version": version,
            "export": {**(job.export or {}), "report": report},
            "progress": 1.0,
        },
    )
    if moved:
        job.log(f"{name} is registered as full weights; deploy that model to serve it.")
    return name


def export_card(job: FineTuningJob, adapter: ModelVersion, pending: dict[str, Any]) -> str:
    """README.md of an export: front matter (base, adapter, quantisation, sizes, held-out
    losses) and a body with the same numbers as a table."""
    metrics = pending.get("metrics", {})
    details = pending.get("export", {})
    quantization = details.get("quantization") or {"method": None}
    scheme = (job.export or {}).get("quantize")
    front = {
        "base_model": job.base_version.repo.full_name,
        "base_model_version": job.base_version.number,
        "tags": ["fine-tuned", "merged", *([scheme] if scheme else [])],
        "pipeline_tag": "text-generation",
        "library_name": "transformers",
        "export": {
            "job": job.id,
            "derived_from": {"base": str(job.base_version), "adapter": str(adapter)},
            "source_job": job.source_job_id,
            "quantization": quantization,
            "dtype": details.get("dtype"),
        },
        "metrics": metrics,
    }
    method = f"{scheme} ({quantization.get('config', '')})" if scheme else "none (merged only)"
    rows = [
        ("Derived from", f"`{job.base_version}` + LoRA `{adapter}`"),
        ("Quantization", method),
        ("Weights before (base)", _bytes(metrics.get("base_bytes"))),
        ("Weights after (exported)", _bytes(metrics.get("bytes"))),
        ("Held-out loss before (base + adapter)", _cell(metrics.get("heldout_loss_before"))),
        ("Held-out loss after (exported)", _cell(metrics.get("heldout_loss_after"))),
        ("Held-out tokens", _cell(metrics.get("heldout_tokens"))),
    ]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# {repo_name_of(adapter)} (export)",
        "",
        f"The LoRA `{adapter}` merged into `{job.base_version}` and exported "
        f"(job `{job.id}`). It loads with `AutoModelForCausalLM.from_pretrained`"
        + (" (torchao installed)." if scheme else "."),
        "",
        "| | |",
        "|---|---:|",
        *(f"| {label} | {value or '–'} |" for label, value in rows),
    ]
    return "\n".join(lines) + "\n"


def repo_name_of(version: ModelVersion) -> str:
    return version.repo.name


def _bytes(value: Any) -> str:
    return f"{int(value):,} bytes" if isinstance(value, int | float) else ""


def _move_result(job: FineTuningJob, repo_id: int, files: list[dict[str, Any]]) -> list[StoredFile]:
    """Copy each uploaded result object to the repo's content-addressed key and drop
    the upload (the declared sha256 names the key; see :mod:`training.services.runner`)."""
    objects = store()
    stored = []
    for entry in files:
        key = model_blob_key(repo_id, entry["sha256"])
        if not objects.exists(runs.RESULT_BUCKET, key):
            objects.copy(runs.RESULT_BUCKET, entry["object_key"], key)
        objects.delete(runs.RESULT_BUCKET, entry["object_key"])
        stored.append(StoredFile(entry["path"], entry["size"], entry["sha256"], key))
    return stored


def _base_extras(base: ModelVersion, repo_id: int, present: set[str]) -> list[StoredFile]:
    """The base's non-weight files (tokenizer, config, chat template) the result lacks."""
    objects = store()
    extras = []
    for record in base.files.all():
        if record.path in present or record.path.endswith(WEIGHT_SUFFIXES):
            continue
        if record.path == "README.md":
            continue
        key = model_blob_key(repo_id, record.sha256)
        if not objects.exists("models", key):
            objects.copy("models", record.object_key, key)
        extras.append(StoredFile(record.path, record.size, record.sha256, key))
    return extras


def _put(repo_id: int, path: str, data: bytes) -> StoredFile:
    import hashlib

    sha = hashlib.sha256(data).hexdigest()
    key = model_blob_key(repo_id, sha)
    store().put_bytes("models", key, data)
    return StoredFile(path, len(data), sha, key)


def _config(files: list[StoredFile], name: str) -> dict[str, Any]:
    found = next((f for f in files if f.path == name), None)
    if found is None:
        return {}
    try:
        data = json.loads(store().get_bytes("models", found.object_key))
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def card_text(job: FineTuningJob, pending: dict[str, Any]) -> str:
    """README.md: YAML front matter (base model, datasets with versions, tags,
    hyperparameters, metrics) and a body with the loss curve as a table."""
    datasets = [str(v) for v in (job.training_version, job.validation_version) if v is not None]
    kind = "full" if job.adapter.get("type") == "full" else "lora"
    front = {
        "base_model": job.base_version.repo.full_name,
        "base_model_version": job.base_version.number,
        "datasets": datasets,
        "tags": ["fine-tuned", kind, job.method],
        "pipeline_tag": "text-generation",
        "library_name": "peft" if kind == "lora" else "transformers",
        "fine_tuning": {
            "job": job.id,
            "method": job.method,
            "hyperparameters": job.hyperparameters,
            "adapter": job.adapter,
            "seed": job.seed,
        },
        "metrics": pending.get("metrics", {}),
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        "---",
        "",
        f"# {repo_name(job)}",
        "",
        f"A {kind.upper() if kind == 'lora' else 'full'} {job.method} fine-tune of "
        f"`{job.base_version}` on {', '.join(f'`{d}`' for d in datasets)} "
        f"(job `{job.id}`).",
        "",
        "## Training metrics",
        "",
        "| step | train_loss | train_accuracy | valid_loss | valid_mean_token_accuracy |",
        "|---:|---:|---:|---:|---:|",
    ]
    history = pending.get("history", [])
    stride = max(1, len(history) // MAX_CARD_ROWS)
    picked = history[::stride]
    if history and picked[-1] is not history[-1]:
        picked.append(history[-1])
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in picked]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def metrics_csv(history: list[list[Any]]) -> str:
    """OpenAI's step-metrics CSV."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for row in history:
        writer.writerow(["" if v is None else (int(v) if i == 0 else v) for i, v in enumerate(row)])
    return out.getvalue()


def _metrics_file(job: FineTuningJob, history: list[list[Any]]) -> str | None:
    """The ``fine-tune-results`` file of the job's owner; its id (None for an org job)."""
    if job.owner_user is None:
        return None
    with tempfile.TemporaryDirectory(prefix="openmaas-ft-") as tmp:
        path = Path(tmp) / "step_metrics.csv"
        path.write_text(metrics_csv(history), encoding="utf-8")
        return create_result_file(job.owner_user, path, "step_metrics.csv").pk


def _serve(job: FineTuningJob, version: ModelVersion, name: str, full: bool) -> None:
    """Attach an adapter to its base's deployment; the event says whether it is served."""
    from compute.services import deployments

    if full:
        job.log(f"Full weights registered as {version}; deploy that model to serve it.")
        return
    try:
        served = deployments.serve_adapter(version, name)
    except Exception as exc:  # serving is a bonus; the fine-tune itself succeeded
        logger.exception("serving %s failed", name)
        job.log(f"Could not serve {name}: {exc}"[:500], level="warning")
        return
    if served is None:
        job.log(f"{name} is not served: the base model {job.base_version} is not deployed.")
    else:
        job.log(f"{name} is served by the deployment of {job.base_version}.")
