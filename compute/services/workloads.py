"""Workloads: a sub-platform's process run on a pool node (a fine-tune's runner).

A sub-platform registers a :class:`WorkloadKind` under a name (``kinds``), submits rows of
that kind, and hears about every status change through ``on_status``. Compute places the
rows (``scheduler.place_workloads``), hands them to the node's agent in the heartbeat
answer, applies the agent's reports, and requeues a failed or lost run itself: status
``pending`` again, ``attempt`` + 1 (which changes the runner's token), until
``max_attempts`` is used up; then the row stays ``failed``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any, Protocol, overload

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from compute.models import Workload, WorkloadStatus
from portal.errors import PlatformError
from portal.models import ModelVersion
from portal.plugins import Registry

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "mrun-"  # noqa: S105 - a prefix, not a secret
DEFAULT_ATTEMPTS = 3
# The statuses a runner's token works in, and the ones the agent is told to run.
RUNNABLE = [WorkloadStatus.ASSIGNED, WorkloadStatus.RUNNING]


class WorkloadKind(Protocol):
    """What a sub-platform provides for its workloads (registered in ``AppConfig.ready``).

    ``entry``: the python module the agent runs (``python -m <entry> --spec spec.json``);
    it must be in the agent's allow-list.
    ``describe``: ``{"spec": {...}, "files": [{"path", "size", "sha256", "url"}]}``, built
    each time the heartbeat answer is (presigned URLs stay fresh; the latest checkpoint can
    be included for a resume).
    ``on_status``: called after every status change of a workload of this kind, not
    necessarily in the transaction that made it; it must be idempotent. A ``failed``
    while ``workload.attempt < workload.max_attempts`` is followed at once by a requeue
    (``failed → pending``); a ``failed`` at the last attempt is final.
    """

    entry: str

    def describe(self, workload: Workload) -> dict[str, Any]: ...

    def on_status(self, workload: Workload, old: str, new: str, reason: str) -> None: ...


class KindRegistry(Registry[Any]):
    """Workload kinds by name. Takes an instance (``kinds.register("training", Kind())``),
    a class (``@kinds.register("training")``, instantiated once on first use) or a lazy
    ``"module:Class"`` (``register_lazy``)."""

    def __init__(self) -> None:
        super().__init__("workload kind", object)
        self._instances: dict[str, Any] = {}

    @overload
    def register(self, name: str) -> Callable[[type[Any]], type[Any]]: ...

    @overload
    def register(self, name: str, kind: WorkloadKind) -> WorkloadKind: ...

    def register(self, name: str, kind: WorkloadKind | None = None) -> Any:
        if kind is None:
            return super().register(name)
        with self._lock:
            if self._entries.get(name) is not type(kind):  # the same class again: a new instance
                super().register(name)(type(kind))
            self._instances[name] = kind
        return kind

    def handler(self, name: str) -> WorkloadKind | None:
        """The kind registered as ``name``, or None (e.g. in compute-only tests)."""
        if name not in self:
            return None
        with self._lock:
            if name not in self._instances:
                self._instances[name] = self.get(name)()
            kind: WorkloadKind = self._instances[name]
            return kind

    def unregister(self, name: str) -> None:
        """Forget ``name`` (tests register kinds of their own)."""
        with self._lock:
            self._entries.pop(name, None)
            self._instances.pop(name, None)


kinds = KindRegistry()


def transition(workload: Workload, new: str, reason: str = "", **fields: Any) -> bool:
    """Compare-and-swap ``workload``'s status (and attempt) to ``new`` with ``fields``;
    then tell its kind. False, and nothing written, if someone moved it first."""
    old = workload.status
    if old == new and not fields:
        return True
    values: dict[str, Any] = {"status": new, "updated_at": timezone.now(), **fields}
    changed = Workload.objects.filter(pk=workload.pk, status=old, attempt=workload.attempt).update(
        **values
    )
    if not changed:
        return False
    for name, value in values.items():
        setattr(workload, name, value)
    if old != new:
        _notify(workload, old, new, reason)
    return True


def _notify(workload: Workload, old: str, new: str, reason: str) -> None:
    kind = kinds.handler(workload.kind)
    if kind is None:
        return
    try:
        with transaction.atomic():  # a savepoint: a failing hook leaves the caller's intact
            kind.on_status(workload, old, new, reason[:2000])
    except Exception:
        # The change is made; a failing hook must not undo it nor stop the caller's loop
        # (node sweeps visit many rows). The kind is idempotent and sees the next change.
        logger.exception("on_status of %s failed (%s → %s)", workload, old, new)


def submit(
    kind: str,
    ref: str,
    *,
    model_version: ModelVersion | None,
    gpus: int = 0,
    gpu_model: str = "",
    priority: int = 0,
) -> Workload:
    """A workload of ``kind`` for ``ref``, pending placement (placed at once if a node has
    room). Idempotent per (kind, ref): a row still pending or on a node is returned as it
    is; a finished one starts over as a new attempt with a fresh budget of attempts."""
    if not kind or len(kind) > 32 or not ref or len(ref) > 64:
        raise PlatformError("A workload needs a kind (≤32) and a ref (≤64).", param="kind")
    if gpus < 0 or gpus > 64:
        raise PlatformError("gpus must be from 0 to 64.", param="gpus")
    wanted = {
        "model_version": model_version,
        "gpus": gpus,
        "gpu_model": gpu_model[:100],
        "priority": priority,
    }
    try:
        with transaction.atomic():
            workload, created = Workload.objects.get_or_create(kind=kind, ref=ref, defaults=wanted)
    except IntegrityError:  # a concurrent submit created it
        workload, created = Workload.objects.get(kind=kind, ref=ref), False
    if not created and workload.status in WorkloadStatus.FINAL:
        _restart(workload, wanted)
    if workload.status == WorkloadStatus.PENDING:
        from compute.services.scheduler import place_workloads

        place_workloads()
        workload.refresh_from_db()
    return workload


def _restart(workload: Workload, wanted: dict[str, Any]) -> None:
    attempt = workload.attempt + 1
    transition(
        workload,
        WorkloadStatus.PENDING,
        reason="submitted again",
        attempt=attempt,
        max_attempts=attempt + DEFAULT_ATTEMPTS - 1,
        last_error="",
        **_cleared(),
        **wanted,
    )


def _cleared() -> dict[str, Any]:
    """The fields of a run on a node, reset for a new attempt."""
    return {
        "node": None,
        "gpu_indices": [],
        "pid": None,
        "exit_code": None,
        "assigned_at": None,
        "started_at": None,
        "finished_at": None,
    }


def stop(workload: Workload, reason: str) -> None:
    """Stop ``workload``: a pending one is stopped at once, one on a node is ``stopping``
    until its agent has stopped the process. A finished or stopping one is left alone."""
    for _ in range(5):  # a concurrent change (a report, a requeue): re-read and retry
        workload.refresh_from_db()
        if workload.status in WorkloadStatus.FINAL or workload.status == WorkloadStatus.STOPPING:
            return
        if workload.status == WorkloadStatus.PENDING or workload.node_id is None:
            done = transition(
                workload, WorkloadStatus.STOPPED, reason, finished_at=timezone.now(), node=None
            )
        else:
            done = transition(workload, WorkloadStatus.STOPPING, reason)
        if done:
            return
    raise PlatformError("The workload keeps changing; try again.", code="conflict", status=409)


def requeue(workload: Workload, reason: str) -> bool:
    """Run ``workload`` again from the start on any node (``pending``, attempt + 1, so the
    old runner's token stops working), or leave it ``failed`` once ``max_attempts`` are
    used up. False if the row changed under us (someone else handled it)."""
    if workload.attempt >= workload.max_attempts:
        if workload.status == WorkloadStatus.FAILED:
            return True
        return transition(
            workload,
            WorkloadStatus.FAILED,
            f"{reason}; no attempts left",
            finished_at=timezone.now(),
            last_error=reason[:4000],
        )
    return transition(
        workload,
        WorkloadStatus.PENDING,
        reason,
        attempt=workload.attempt + 1,
        # A failed run keeps its own error (the log tail); a lost one gets the reason.
        last_error=workload.last_error if workload.status == WorkloadStatus.FAILED else reason,
        **_cleared(),
    )


def _digest(workload_id: int, attempt: int) -> str:
    message = f"workload:{workload_id}:{attempt}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def token_for(workload: Workload) -> str:
    """The runner's bearer token for the workload's current attempt (nothing stored)."""
    digest = _digest(workload.pk, workload.attempt)
    return f"{TOKEN_PREFIX}{workload.pk}.{workload.attempt}.{digest}"


def authenticate(raw_token: str) -> Workload | None:
    """The workload whose current attempt ``raw_token`` belongs to, while it is assigned or
    running; None for anything else (a superseded attempt, a finished run, garbage)."""
    if not raw_token.startswith(TOKEN_PREFIX) or len(raw_token) > 200:
        return None
    parts = raw_token[len(TOKEN_PREFIX) :].split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    workload_id, attempt = int(parts[0]), int(parts[1])
    if workload_id > 2**62 or attempt > 2**30:
        return None
    if not hmac.compare_digest(parts[2], _digest(workload_id, attempt)):
        return None
    return Workload.objects.filter(pk=workload_id, attempt=attempt, status__in=RUNNABLE).first()


def for_ref(kind: str, ref: str) -> Workload | None:
    return Workload.objects.filter(kind=kind, ref=ref).first()
