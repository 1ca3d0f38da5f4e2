"""The platform's moderation classifiers and guard model.

Classifiers: staff train one from a labelled file of a dataset hub version (CSV or JSON
Lines with ``TEXT``/``label`` columns, see :mod:`governance.moderation.classifier`);
each training is a numbered :class:`ClassifierVersion`, trained in Celery on a
stratified four fifths of the rows and measured (precision, recall, F1) on the fifth it
never saw. Its two files (``weights.npz``, ``params.json``: no pickle) go to the object
store under ``governance/classifiers/v<number>-<random>/``. Activating a version makes it the
pipeline's classifier in every process: :func:`sync_active` (called whenever a
snapshot's pipeline is built — the gateway's on reload, ``/v1/moderations``' when the
snapshot's version moved) downloads the active version's files once into
``$OPENMAAS_CACHE_DIR`` and points the pure loader at them; with none active the
shipped COLD model is used. Training and activation are
audited, and activation bumps the governance snapshot once committed.

Guard model: with ``GOVERNANCE_GUARD_MODEL`` set to a served model name,
:func:`guard_checker` gives a :class:`~governance.moderation.guard.GuardChecker` whose
``call`` posts to the platform's own gateway (``GOVERNANCE_GUARD_URL``) with a
short-lived key of the guard account (``GOVERNANCE_GUARD_USER``, else the first
superuser), allowed only that model.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from governance.models import ClassifierVersion, ReportStatus
from governance.moderation import classifier
from governance.moderation.guard import Call, GuardChecker
from governance.services import audit, snapshot
from governance.services.scope import is_staff
from portal.errors import Conflict, NotFound, PermissionDenied, PlatformError, Unavailable

logger = logging.getLogger(__name__)

ARTIFACTS = "artifacts"  # the object store's bucket kind
ARTIFACT_FILES = (classifier.WEIGHTS, classifier.PARAMS)
_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_NUMBER = re.compile(r"^v?(\d{1,9})$")
# The scope that marks the guard's own keys. Not one of the scopes a user may give a
# key (portal.models.keys.SCOPES): only this module mints it. The gateway's inline
# filter must let these requests through unmoderated and uncounted — their content is
# the text under review, and the rubric itself names every risk.
GUARD_SCOPE = "governance:guard"
_REVISION = re.compile(r"^[0-9a-f]{8,64}$")


class GuardUnavailable(Unavailable):
    """The guard model could not be asked (no account, the gateway refused or failed)."""


def _require_staff(actor: Any) -> None:
    if not is_staff(actor):
        raise PermissionDenied("Only platform staff manage moderation classifiers.")


def artifact_prefix(number: int) -> str:
    """Where version ``number``'s files go in the artifacts bucket (platform-built; the
    random part keeps a reset database's new v1 from meeting an old v1's files)."""
    return f"governance/classifiers/v{int(number)}-{secrets.token_hex(4)}/"


# --- training ------------------------------------------------------------------------


def train_from_dataset(
    actor: Any, dataset: str, revision: str = "", path: str = ""
) -> ClassifierVersion:
    """Record a classifier version trained from ``path`` of ``dataset`` (``ns/name``)
    at ``revision`` (a version number such as ``3``/``v3``, a revision hash, or empty
    for the newest ready version) and queue its training (Celery, after commit).

    ``path`` may be empty when the version has one file. Raises PermissionDenied (403)
    for non-staff, NotFound (404) for a dataset, version or file the actor cannot read,
    Conflict (409) while the version is not ready, PlatformError (400) for a malformed
    name or a file that is neither CSV nor JSON Lines.
    """
    from datasets.services import consumers

    _require_staff(actor)
    version = _dataset_version(actor, dataset, revision)
    state, detail = consumers.input_state(version)
    if state != consumers.READY:
        raise Conflict(
            f"Dataset version {version} is not ready ({state}). {detail}".strip(),
            code="dataset_not_ready",
        )
    path = _file_of(version, path)
    source = f"{version.repo.namespace}/{version.repo.name}@{version.number}:{path}"
    with transaction.atomic():
        row = _new_version(actor, source)
        audit.record(
            "classifier.train",
            actor=actor,
            target_type="classifier",
            target_id=str(row.number),
            data={"source": source, "revision": version.revision},
        )
        transaction.on_commit(lambda: _queue(row.pk))
    return row


def _dataset_version(actor: Any, dataset: str, revision: str) -> Any:
    from datasets.services import consumers

    dataset, revision = str(dataset).strip(), str(revision or "").strip()
    if not _DATASET.match(dataset):
        raise PlatformError("'dataset' must be namespace/name.", param="dataset")
    number = _NUMBER.match(revision)
    if number:
        return consumers.resolve_input(actor, f"{dataset}@{number[1]}", "revision")
    newest = consumers.resolve_input(actor, dataset, "dataset")
    if not revision:
        return newest
    if not _REVISION.match(revision):
        raise PlatformError(
            "'revision' must be a version number or a revision hash.", param="revision"
        )
    found = newest.repo.versions.select_related("repo").filter(revision=revision).first()
    if found is None:
        raise NotFound(f"No version of {dataset} has revision {revision}.", param="revision")
    return found


def _file_of(version: Any, path: str) -> str:
    paths = list(version.files.values_list("path", flat=True))
    if not path:
        if len(paths) != 1:
            raise PlatformError(
                f"{version} has {len(paths)} files; name one with 'path'.", param="path"
            )
        path = paths[0]
    if path not in paths:
        raise NotFound(f"No file '{path[:200]}' in {version}.", param="path")
    if not path.lower().endswith((".csv", ".jsonl", ".ndjson")):
        raise PlatformError("The file must be CSV or JSON Lines (.csv, .jsonl).", param="path")
    return path


def _new_version(actor: Any, source: str) -> ClassifierVersion:
    """The next numbered version; two admins training at once get distinct numbers."""
    for _ in range(5):
        last = ClassifierVersion.objects.aggregate(n=Max("number"))["n"] or 0
        try:
            with transaction.atomic():
                return ClassifierVersion.objects.create(
                    number=last + 1, source=source[:300], created_by=actor
                )
        except IntegrityError:
            continue
    raise Conflict("Another classifier was being recorded; try again.", code="busy")


def _queue(version_id: int) -> None:
    from governance.jobs.classifiers import train_classifier

    train_classifier.delay(version_id)


def run_training(version_id: int) -> ClassifierVersion | None:
    """Train a pending version (what the Celery task does): read its file from the
    dataset hub, train and measure, upload the model, record the metrics. A version
    that is not pending (another worker took it, or it ended) is left alone; a failure
    is recorded on the row (``failed`` with the reason), not raised."""
    with transaction.atomic():
        row = (
            ClassifierVersion.objects.select_for_update()
            .filter(pk=version_id, status=ReportStatus.PENDING)
            .first()
        )
        if row is None:
            return None
        row.status = ReportStatus.RUNNING
        row.save(update_fields=["status"])
    try:
        with tempfile.TemporaryDirectory(prefix="openmaas-classifier-") as tmp:
            metrics = _train(row, Path(tmp))
    except (classifier.TrainingDataError, UnicodeDecodeError, PlatformError, OSError) as exc:
        logger.warning("classifier v%s failed: %s", row.number, exc)
        return _finish(row, ReportStatus.FAILED, error=str(exc)[:2000])
    except Exception as exc:
        # Anything else (the object store, a library) must still end the row, or it would
        # read "running" for ever; the traceback goes to the worker's log.
        logger.exception("classifier v%s failed", row.number)
        return _finish(row, ReportStatus.FAILED, error=f"Internal error ({type(exc).__name__}).")
    return _finish(row, ReportStatus.FINISHED, metrics=metrics)


def _train(row: ClassifierVersion, work: Path) -> dict[str, Any]:
    started = time.perf_counter()
    local = _download_source(row, work / "data")
    data = classifier.read_labelled(local)
    model, metrics = classifier.train_and_measure(data)
    model.params["source"] = row.source
    out = model.save(work / "model")
    objects = _store()
    prefix = artifact_prefix(row.number)
    for name in ARTIFACT_FILES:
        objects.put_file(ARTIFACTS, prefix + name, out / name)
    row.artifact_prefix = prefix
    held = model.params["eval"]
    return {
        **metrics.as_dict(),
        "rows": len(data.labels),
        "offensive_rows": int(sum(data.labels)),
        "train_rows": len(data.labels) - int(held["support"]),
        "test_rows": int(held["support"]),
        "threshold": model.params["threshold"],
        "categories": model.categories,
        "seconds": round(time.perf_counter() - started, 2),
    }


def _download_source(row: ClassifierVersion, into: Path) -> Path:
    """The version's training file, read through the dataset hub as its creator (who
    may since have lost access: then it is a NotFound)."""
    from datasets.services import consumers
    from datasets.services.versions import BUCKET

    ref, _, path = row.source.partition(":")
    if row.created_by is None:
        raise PermissionDenied("The classifier's creator is gone.")
    version = consumers.resolve_input(row.created_by, ref, "dataset")
    record = version.files.filter(path=path).first()
    if record is None:
        raise NotFound(f"No file '{path[:200]}' in {version}.", param="path")
    into.mkdir(parents=True, exist_ok=True)
    local = into / Path(record.path).name
    _store().download(BUCKET, record.object_key, local)
    return local


def _finish(row: ClassifierVersion, status: str, **fields: Any) -> ClassifierVersion:
    row.status = status
    row.finished_at = timezone.now()
    for name, value in fields.items():
        setattr(row, name, value)
    row.save(update_fields=["status", "finished_at", "artifact_prefix", *fields])
    return row


def _store() -> Any:
    from portal.storage import store

    return store()


# --- activation ----------------------------------------------------------------------


def activate(actor: Any, version: ClassifierVersion) -> ClassifierVersion:
    """Make ``version`` the pipeline's classifier (the previous active one retires).
    Raises PermissionDenied for non-staff, Conflict (409) unless it finished training.
    Audited; the governance snapshot is bumped once this commits."""
    _require_staff(actor)
    with transaction.atomic():
        row = ClassifierVersion.objects.select_for_update().get(pk=version.pk)
        if row.status != ReportStatus.FINISHED or not row.artifact_prefix:
            raise Conflict(
                f"Classifier v{row.number} is {row.status}; only a trained one can be activated.",
                code="classifier_not_ready",
            )
        previous = list(
            ClassifierVersion.objects.filter(active=True)
            .exclude(pk=row.pk)
            .values_list("number", flat=True)
        )
        ClassifierVersion.objects.filter(active=True).exclude(pk=row.pk).update(active=False)
        row.active = True
        row.save(update_fields=["active"])
        audit.record(
            "classifier.activate",
            actor=actor,
            target_type="classifier",
            target_id=str(row.number),
            data={"source": row.source, "previous": previous, "metrics": row.metrics},
        )
        transaction.on_commit(snapshot.bump)
    return row


def deactivate(actor: Any) -> ClassifierVersion | None:
    """Retire the active version: the pipeline goes back to the shipped COLD model.
    Returns the retired version (None when none was active). Audited; the snapshot is
    bumped once this commits."""
    _require_staff(actor)
    with transaction.atomic():
        row = ClassifierVersion.objects.select_for_update().filter(active=True).first()
        if row is None:
            return None
        ClassifierVersion.objects.filter(active=True).update(active=False)
        row.active = False
        audit.record(
            "classifier.activate",
            actor=actor,
            target_type="classifier",
            target_id="builtin",
            data={"source": "builtin:cold", "previous": [row.number]},
        )
        transaction.on_commit(snapshot.bump)
    return row


def active_version() -> ClassifierVersion | None:
    """The version the pipeline uses, or None for the shipped COLD model."""
    return ClassifierVersion.objects.filter(active=True).order_by("-number").first()


_sync_lock = threading.Lock()


def sync_active() -> int | None:
    """Point this process's classifier loader at the active version (downloading its
    files once into the cache), or back at the shipped model when none is active.
    Returns the active version's number. One small query when nothing changed; an
    active version whose files cannot be fetched leaves the loader as it was (logged)."""
    row = active_version()
    if row is None:
        classifier.use_model_dir(None)
        return None
    with _sync_lock:
        try:
            classifier.use_model_dir(local_model_dir(row))
        except Exception:
            # The store or the files failing must not stop moderation: the model
            # loaded before keeps answering, and the next call tries again.
            logger.exception("classifier v%s could not be loaded", row.number)
    return row.number


def local_model_dir(row: ClassifierVersion) -> Path:
    """The version's files in this host's cache (``$OPENMAAS_CACHE_DIR/moderation/
    trained/``), fetched from the object store the first time."""
    target = classifier.cache_dir() / "trained" / row.artifact_prefix.rstrip("/").split("/")[-1]
    if (target / classifier.PARAMS).is_file() and (target / classifier.WEIGHTS).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        objects = _store()
        for name in ARTIFACT_FILES:
            objects.download(ARTIFACTS, row.artifact_prefix + name, staging / name)
        classifier.load_model(staging)  # refuse a broken copy before naming it
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --- the guard model -----------------------------------------------------------------

_key_lock = threading.Lock()
_keys: dict[str, tuple[str, float]] = {}  # model → (secret, monotonic deadline)


def guard_checker() -> GuardChecker | None:
    """The guard checker for ``GOVERNANCE_GUARD_MODEL``, or None when it is unset."""
    model = str(getattr(settings, "GOVERNANCE_GUARD_MODEL", "") or "")
    if not model:
        return None
    low, high = getattr(settings, "GOVERNANCE_GUARD_BAND", (0.3, 0.7))
    return GuardChecker(guard_call(model), band=(float(low), float(high)), model=model)


def guard_call(model: str) -> Call:
    """``call(messages) -> str`` for a guard checker: a chat completion of ``model``
    through the platform's gateway, temperature 0 and a few tokens, with the guard
    account's short-lived key (one per process and model, re-minted before it expires
    or when the gateway no longer takes it). Raises :class:`GuardUnavailable`."""
    url = str(getattr(settings, "GOVERNANCE_GUARD_URL", settings.PUBLIC_URL)).rstrip("/")
    timeout = float(getattr(settings, "GOVERNANCE_GUARD_TIMEOUT_S", 30))
    body: dict[str, Any] = {
        "model": model,
        "temperature": 0,
        "max_tokens": int(getattr(settings, "GOVERNANCE_GUARD_MAX_TOKENS", 24)),
        "stream": False,
    }

    def call(messages: list[dict[str, Any]]) -> str:
        for attempt in range(2):
            secret = _guard_key(model, fresh=attempt > 0)
            try:
                answer = httpx.post(
                    f"{url}/v1/chat/completions",
                    json={**body, "messages": messages},
                    headers={"Authorization": f"Bearer {secret}"},
                    timeout=timeout,
                )
            except httpx.HTTPError as exc:
                raise GuardUnavailable(f"The guard model could not be reached: {exc}") from exc
            if answer.status_code == 401 and attempt == 0:
                continue  # the key was revoked or expired early: mint another
            if answer.status_code != 200:
                raise GuardUnavailable(
                    f"The guard model answered HTTP {answer.status_code}: {answer.text[:200]}"
                )
            try:
                return str(answer.json()["choices"][0]["message"]["content"] or "")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise GuardUnavailable("The guard model's answer was not a completion.") from exc
        raise GuardUnavailable("The gateway refused the guard's key.")

    return call


def _guard_key(model: str, *, fresh: bool = False) -> str:
    from portal.services.keys import create_api_key

    ttl = int(getattr(settings, "GOVERNANCE_GUARD_KEY_TTL_S", 900))
    with _key_lock:
        held = _keys.get(model)
        # Re-minted with a fifth of its life left, so that no request carries a key
        # that expires in flight.
        if held is not None and not fresh and time.monotonic() < held[1]:
            return held[0]
        _, secret = create_api_key(
            _guard_user(),
            name=f"governance guard {model}"[:100],
            expires_at=timezone.now() + timedelta(seconds=ttl),
            scopes=["inference", GUARD_SCOPE],
            allowed_models=[model],
            rpm_limit=0,
            tpm_limit=0,
        )
        _keys[model] = (secret, time.monotonic() + ttl * 0.8)
        return secret


def _guard_user() -> Any:
    users = get_user_model().objects.filter(is_active=True)
    name = str(getattr(settings, "GOVERNANCE_GUARD_USER", "") or "")
    user = (
        users.filter(username=name).first()
        if name
        else users.filter(is_superuser=True).order_by("pk").first()
    )
    if user is None:
        raise GuardUnavailable(
            f"No guard account: no active user '{name}'."
            if name
            else "No guard account: set GOVERNANCE_GUARD_USER or create a superuser."
        )
    return user
