"""The handlers of dataset jobs (run by :func:`portal.jobs.run_job` in a Celery worker):
ingest (hash, validate, write the viewer's Parquet copy), statistics, and processing.

Each handler is idempotent: a job requeued after its worker died starts again from the
objects in the store and reaches the same result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import transaction

from datasets.models import (
    DatasetFile,
    DatasetJob,
    DatasetRepo,
    DatasetUse,
    DatasetVersion,
    JobKind,
    UseKind,
    VersionOrigin,
    VersionState,
)
from datasets.services.repos import size_category
from datasets.services.versions import (
    BUCKET,
    LocalFile,
    add_local_files,
    queue_job,
    require_usable,
    settle,
)
from portal.errors import NotFound, PlatformError
from portal.jobs import JobContext
from portal.models import ModelRepo
from portal.storage import dataset_blob_key, dataset_parquet_key, store

if TYPE_CHECKING:
    from datasets.formats import TokenCounter


def handle(job: DatasetJob, ctx: JobContext) -> dict[str, Any] | None:
    handlers: dict[str, Any] = {
        JobKind.INGEST: ingest,
        JobKind.STATISTICS: statistics,
        JobKind.PROCESS: process,
    }
    result: dict[str, Any] | None = handlers[job.kind](job, ctx)
    return result


def _download(key: str, dest: Path) -> str:
    """Fetch an object to ``dest``; returns its sha256."""
    digest = hashlib.sha256()
    with dest.open("wb") as handle:
        for chunk in store().stream(BUCKET, key):
            digest.update(chunk)
            handle.write(chunk)
    return digest.hexdigest()


def _progress(ctx: JobContext, done_before: int, total: int) -> Any:
    def report(done: int, _size: int) -> None:
        ctx.progress((done_before + done) / max(total, 1))

    return report


def ingest(job: DatasetJob, ctx: JobContext) -> dict[str, Any]:
    from datasets.formats import ValidationCancelled, validate_file

    version = job.version
    tokens = _tokens_for(job.params.get("tokenizer"), job.created_by)
    expected = job.params.get("expected")
    files = list(version.files.all())
    total = sum(f.size for f in files)
    reports: dict[str, Any] = {}
    done = 0
    with tempfile.TemporaryDirectory(prefix="openmaas-ingest-") as tmp:
        for record in files:
            source = Path(tmp) / f"{record.pk}.data"
            parquet = Path(tmp) / f"{record.pk}.parquet"
            sha = _download(record.object_key, source)
            try:
                report = validate_file(
                    source,
                    record.path,
                    expected=expected,
                    tokens=tokens,
                    parquet_out=parquet,
                    progress=_progress(ctx, done, total),
                    should_stop=ctx.should_stop,
                )
            except ValidationCancelled:
                ctx.progress(0, force=True)  # raises JobCancelled: the cancel is recorded
                raise
            _store_ingested(version, record, sha, source, parquet, report.rows)
            reports[record.path] = report.to_dict()
            source.unlink()
            done += record.size
    return _settle_ingest(job, version, reports)


def _store_ingested(
    version: DatasetVersion,
    record: DatasetFile,
    sha: str,
    source: Path,
    parquet: Path,
    rows: int,
) -> None:
    """Move the file to its content-addressed key and keep its viewer copy."""
    objects = store()
    blob = dataset_blob_key(version.repo_id, sha)
    if record.object_key != blob:
        if not objects.exists(BUCKET, blob):
            objects.put_file(BUCKET, blob, source)
        staging = record.object_key
        DatasetFile.objects.filter(pk=record.pk).update(object_key=blob)
        objects.delete(BUCKET, staging)
    parquet_key = ""
    if parquet.exists():
        parquet_key = dataset_parquet_key(version.pk, record.pk)
        objects.put_file(BUCKET, parquet_key, parquet)
    DatasetFile.objects.filter(pk=record.pk).update(
        sha256=sha, size=source.stat().st_size, parquet_key=parquet_key, rows=rows
    )


def _revision(version: DatasetVersion, files: list[DatasetFile]) -> str:
    lines = sorted(f"{f.path}\t{f.size}\t{f.sha256}" for f in files)
    parent = version.parent.revision if version.parent else ""
    lines.append(f"parent\t{parent}\t{json.dumps(version.steps, sort_keys=True)}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _settle_ingest(
    job: DatasetJob, version: DatasetVersion, reports: dict[str, Any]
) -> dict[str, Any]:
    files = list(version.files.all())  # re-read: ingest moved keys and set hashes
    valid = all(r["valid"] for r in reports.values())
    formats = {r["format"] for r in reports.values() if r.get("format")}
    rows = sum(r["rows"] for r in reports.values())
    settle(
        version,
        VersionState.READY if valid else VersionState.INVALID,
        revision=_revision(version, files),
        report=reports,
        rows=rows,
        format=formats.pop() if len(formats) == 1 else ("mixed" if formats else ""),
    )
    repo = version.repo
    if not repo.size_category or "size_categories" not in repo.card_data:
        DatasetRepo.objects.filter(pk=repo.pk).update(size_category=size_category(rows))
    if valid:
        queue_job(
            version,
            JobKind.STATISTICS,
            job.created_by,
            {"tokenizer": job.params.get("tokenizer", "")},
        )
    problems = sum(sum(r["problem_counts"].values()) for r in reports.values())
    return {"state": version.state, "rows": rows, "problems": problems}


def statistics(job: DatasetJob, ctx: JobContext) -> dict[str, Any]:
    from datasets.formats import compute_statistics

    version = job.version
    name = job.params.get("tokenizer") or ""
    tokens = _tokens_for(name, job.created_by)
    files = [f for f in version.files.all() if f.parquet_key]
    splits: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="openmaas-stats-") as tmp:
        for index, record in enumerate(files):
            local = Path(tmp) / f"{record.pk}.parquet"
            _download(record.parquet_key, local)
            splits[record.path] = compute_statistics(
                local,
                version.format or None,
                tokens=tokens,
                progress=_file_progress(ctx, index, len(files)),
            )
            splits[record.path]["split"] = record.split
    stats = {"files": splits, "tokenizer": name}
    DatasetVersion.objects.filter(pk=version.pk).update(stats=stats, tokenizer=name)
    return {"files": len(splits)}


def _file_progress(ctx: JobContext, index: int, count: int) -> Callable[[int, int], None]:
    """Progress of file ``index`` of ``count`` as a fraction of the whole job."""

    def report(done: int, total: int) -> None:
        ctx.progress((index + done / max(total, 1)) / count)

    return report


def _tokens_for(name: str | None, user: Any) -> TokenCounter | None:
    """The tokenizer of the model repo ``name`` (one the user may read), or None."""
    if not name:
        return None
    key, context = _tokenizer_of(name, user)
    return _load_tokens(key, context)


def _tokenizer_of(name: str, user: Any) -> tuple[str, int | None]:
    """The object key of model ``name``'s tokenizer.json and its context length.

    Raises NotFound (no such model readable by ``user``) or PlatformError (no tokenizer).
    """
    namespace, _, repo_name = name.partition("/")
    repo = ModelRepo.objects.restrict(user).filter(namespace=namespace, name=repo_name).first()
    version = repo.latest_version() if repo else None
    if version is None:
        raise NotFound(f"No model '{name}' to take a tokenizer from.", param="tokenizer")
    record = version.files.filter(path="tokenizer.json").first()
    if record is None:
        raise PlatformError(f"Model '{name}' has no tokenizer.json.", param="tokenizer")
    context = version.config.get("max_position_embeddings")
    return record.object_key, int(context) if context else None


def start_statistics(version: DatasetVersion, user: Any, tokenizer: str = "") -> DatasetJob:
    """Queue the statistics of a ready version again, counting tokens with the tokenizer
    of model ``tokenizer`` (``namespace/name``; empty: characters only).

    Raises Conflict when the version is not ready, NotFound or PlatformError when the
    model is not readable by ``user`` or has no tokenizer (checked before queueing).
    """
    require_usable(version)
    if tokenizer:
        _tokenizer_of(tokenizer, user)
    with transaction.atomic():
        return queue_job(version, JobKind.STATISTICS, user, {"tokenizer": tokenizer})


@functools.lru_cache(maxsize=4)
def _load_tokens(key: str, context: int | None) -> TokenCounter:
    from datasets.formats import TokenCounter

    with tempfile.TemporaryDirectory(prefix="openmaas-tok-") as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_bytes(store().get_bytes("models", key))
        return TokenCounter.from_file(path, context)


# Processing ---------------------------------------------------------------------------


def start_processing(version: DatasetVersion, user: Any, spec: list[dict[str, Any]]) -> DatasetJob:
    """Check the steps, then queue a run that makes a new version from ``version``.

    Raises Conflict when the version is not usable, PipelineError for bad steps.
    """
    from datasets.pipelines import parse_steps

    require_usable(version)
    parse_steps(spec)
    with transaction.atomic():
        job = queue_job(version, JobKind.PROCESS, user, {"steps": spec})
        DatasetUse.objects.create(
            version=version,
            kind=UseKind.PROCESSING,
            ref=f"dsjob-{job.pk}",
            label=", ".join(str(step.get("step")) for step in spec)[:200],
        )
    return job


def process(job: DatasetJob, ctx: JobContext) -> dict[str, Any]:
    from datasets.formats import iter_rows
    from datasets.pipelines import Row, parse_steps, run_pipeline

    version = job.version
    steps = parse_steps(job.params["steps"])
    files = list(version.files.all())
    with tempfile.TemporaryDirectory(prefix="openmaas-process-") as tmp:
        local = []
        for record in files:
            path = Path(tmp) / f"in-{record.pk}"
            _download(record.object_key, path)
            local.append((record, path))

        def source() -> Any:
            for record, path in local:
                for line, row in iter_rows(path, record.path):
                    yield Row(line, record.split, row)

        rows_total = sum(record.rows or 0 for record in files)
        result = run_pipeline(
            steps,
            source,
            Path(tmp) / "out",
            progress=lambda n: ctx.progress(n / max(rows_total, 1)),
            should_stop=ctx.should_stop,
        )
        outputs = [LocalFile(f"{split}.jsonl", path) for split, path in result.files.items()]
        if not outputs:
            raise PlatformError("The steps removed every row; no version was made.")
        output = add_local_files(
            version.repo,
            job.created_by,
            outputs,
            origin=VersionOrigin.PROCESSING,
            parent=version,
            steps=job.params["steps"],
            message=f"processed from v{version.number}",
        )
    DatasetJob.objects.filter(pk=job.pk).update(output=output)
    DatasetUse.objects.filter(version=version, ref=f"dsjob-{job.pk}").update(active=False)
    return {
        "output_version": output.number,
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "steps": result.steps,
        "removed_lines": result.removed_lines,
    }


def release_finished_uses(job: DatasetJob) -> None:
    """A processing run that ended any way no longer holds its input."""
    if job.kind == JobKind.PROCESS and job.is_terminal:
        DatasetUse.objects.filter(version_id=job.version_id, ref=f"dsjob-{job.pk}").update(
            active=False
        )
