"""The catalogue: tasks and suites as YAML documents, owned like any resource.

A task's YAML is parsed and checked by :func:`evaluation.harness.spec.parse_task`
(errors name the field path: a 400); the row keeps the source as written, the parsed
spec as JSON and its hash. A suite names its tasks as ``namespace/name`` or a bare name
(looked up in the suite owner's namespace, then among the built-ins). The built-in tasks
and suites under ``evaluation/builtin/`` are synced into the ``openmaas`` organisation,
public, by :func:`sync_builtin` (idempotent; run lazily on first use).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from evaluation.models import EvalSuite, EvalTask, SuiteTask
from portal.errors import Conflict, NotFound, PermissionDenied, PlatformError
from portal.models import Organization, Visibility
from portal.models.ownership import OwnedModel

logger = logging.getLogger(__name__)

BUILTIN_NAMESPACE = "openmaas"
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin"
MAX_SOURCE_CHARS = 256 * 1024


# --- tasks ----------------------------------------------------------------------------


def parse_task_source(yaml_text: str) -> tuple[Any, dict[str, Any], str]:
    """``(spec, spec_json, sha256)`` of a task's YAML; raises SpecError (400)."""
    from evaluation.harness.spec import parse_task, spec_sha256

    _check_text(yaml_text, "source")
    spec = parse_task(yaml_text)
    return spec, spec.to_json(), spec_sha256(spec)


def _check_text(text: Any, param: str) -> None:
    if not isinstance(text, str) or not text.strip():
        raise PlatformError(f"'{param}' must be a non-empty YAML document.", param=param)
    if len(text) > MAX_SOURCE_CHARS:
        raise PlatformError(
            f"'{param}' is over {MAX_SOURCE_CHARS // 1024} KiB.", code="invalid_task", param=param
        )


Owned = TypeVar("Owned", bound=OwnedModel)


def _check_visibility(owner: Any, visibility: str) -> str:
    if visibility not in Visibility.values:
        raise PlatformError(f"Unknown visibility '{visibility[:20]}'.", param="visibility")
    if visibility == Visibility.ORG and not isinstance(owner, Organization):
        raise PlatformError("Only an organisation's resources can be 'org'.", param="visibility")
    return visibility


def check_owner(user: Any, owner: Any) -> None:
    """Raise PermissionDenied unless ``user`` may create things under ``owner``."""
    from portal.services.accounts import may_write_owner

    if not may_write_owner(user, owner):
        raise PermissionDenied(f"You may not create evaluations under '{_ns(owner)}'.")


def save_new(
    item: Owned,
    user: Any,
    owner: Any,
    visibility: str,
    *,
    also: Callable[[Owned], None] | None = None,
) -> Owned:
    """Save a new named evaluation object (task, suite, endpoint, leaderboard, arena)
    under ``owner``, with ``also(item)`` in the same transaction: PermissionDenied unless
    ``user`` may create under ``owner``, 400 for a bad visibility, Conflict (409) when
    the name is taken there."""
    check_owner(user, owner)
    item.visibility = _check_visibility(owner, visibility)
    item.set_owner(owner)
    try:
        with transaction.atomic():
            item.save(force_insert=True)
            if also is not None:
                also(item)
    except IntegrityError as exc:
        name = getattr(item, "name", "")
        raise Conflict(
            f"'{item.namespace}/{name}' exists already.", code="name_taken", param="name"
        ) from exc
    return item


def owner_named(user: Any, namespace: str | None) -> Any:
    """The user or organisation called ``namespace`` (the user when not given)."""
    from portal.services.accounts import resolve_owner

    if not namespace or namespace == user.get_username():
        return user
    try:
        return resolve_owner(namespace)
    except NotFound as exc:
        raise NotFound(exc.message, param="owner") from exc


def _ns(owner: Any) -> str:
    return EvalTask.namespace_of(owner)


def create_task(
    user: Any, owner: Any, yaml_text: str, visibility: str = Visibility.PRIVATE
) -> EvalTask:
    """A new task ``owner/<task name>`` from its YAML.

    Raises SpecError (400) for a malformed document, PermissionDenied when ``user`` may
    not write under ``owner``, Conflict (409) when the name is taken."""
    _, spec_json, digest = parse_task_source(yaml_text)
    task = EvalTask(source=yaml_text, created_by=user)
    _apply_task_spec(task, spec_json, digest)
    return save_new(task, user, owner, visibility)


def _apply_task_spec(task: EvalTask, spec_json: dict[str, Any], digest: str) -> None:
    task.name = str(spec_json["task"])
    task.description = str(spec_json.get("description") or "")
    task.output_type = str(spec_json["output_type"])
    task.tags = [str(t) for t in spec_json.get("tags") or []]
    task.spec = spec_json
    task.spec_sha256 = digest


def update_task(
    user: Any, task: EvalTask, yaml_text: str | None = None, visibility: str | None = None
) -> EvalTask:
    """Replace a task's YAML (its name may not change) and/or its visibility.
    Built-in tasks are synced from the project, never edited (403)."""
    _check_writable(user, task)
    if yaml_text is not None:
        _, spec_json, digest = parse_task_source(yaml_text)
        if spec_json["task"] != task.name:
            raise PlatformError(
                f"task: the name must stay '{task.name}' (create a new task to rename).",
                code="invalid_task",
                param="task",
            )
        task.source = yaml_text
        _apply_task_spec(task, spec_json, digest)
    if visibility is not None:
        task.visibility = _check_visibility(task.owner_org or task.owner_user, visibility)
    task.save()
    return task


def _check_writable(user: Any, item: EvalTask | EvalSuite) -> None:
    if item.builtin:
        raise PermissionDenied(f"{item} is built in; copy it under your name to change it.")
    if not type(item).objects.restrict(user, "write").filter(pk=item.pk).exists():
        raise PermissionDenied(f"You may read {item} but not change it.")


def delete_task(user: Any, task: EvalTask) -> None:
    """Delete a task no suite or run uses (409 otherwise)."""
    _check_writable(user, task)
    if SuiteTask.objects.filter(task=task).exists() or task.runs.exists():
        raise Conflict(f"{task} is used by a suite or a run.", code="task_in_use")
    task.delete()


def tasks_of(user: Any) -> QuerySet[EvalTask]:
    ensure_builtin()
    return EvalTask.objects.restrict(user, "read")


def resolve_task(user: Any, ref: str, param: str = "task") -> EvalTask:
    """The task ``namespace/name`` names if ``user`` may read it; NotFound (404) else."""
    namespace, name = _split_ref(ref, param)
    task = tasks_of(user).filter(namespace=namespace, name=name).first()
    if task is None:
        raise NotFound(f"No such evaluation task: {str(ref)[:100]}", param=param)
    return task


def _split_ref(ref: Any, param: str) -> tuple[str, str]:
    if not isinstance(ref, str):
        raise PlatformError(f"'{param}' must be 'namespace/name'.", param=param)
    namespace, _, name = ref.strip().partition("/")
    if not namespace or not name or "/" in name:
        raise NotFound(f"'{ref[:100]}' is not 'namespace/name'.", param=param)
    return namespace, name


# --- suites ---------------------------------------------------------------------------


def parse_suite_source(yaml_text: str) -> dict[str, Any]:
    """The suite YAML as a plain dict (``suite``, ``description``, ``tasks`` [{task,
    weight}], ``aggregation``, ``ahp``); raises SpecError (400)."""
    from evaluation.harness.spec import parse_suite

    _check_text(yaml_text, "source")
    spec = parse_suite(yaml_text)
    to_json = getattr(spec, "to_json", None)
    return dict(to_json() if callable(to_json) else dataclasses.asdict(spec))


def create_suite(
    user: Any, owner: Any, yaml_text: str, visibility: str = Visibility.PRIVATE
) -> EvalSuite:
    """A new suite ``owner/<suite name>`` from its YAML; every task it names must be
    readable by ``user`` (404 naming ``tasks[i].task`` otherwise)."""
    data = parse_suite_source(yaml_text)
    suite = EvalSuite(source=yaml_text, created_by=user)
    members = _members(user, OwnedModel.namespace_of(owner), data)
    _apply_suite_spec(suite, data)
    return save_new(
        suite, user, owner, visibility, also=lambda saved: _save_members(saved, members)
    )


def _apply_suite_spec(suite: EvalSuite, data: dict[str, Any]) -> None:
    suite.name = str(data["suite"])
    suite.description = str(data.get("description") or "")
    suite.aggregation = str(data.get("aggregation") or "macro")
    suite.ahp = _ahp_record(data)


def _ahp_record(data: dict[str, Any]) -> dict[str, Any]:
    """What the suite keeps of its AHP comparisons: criteria, matrix, the weights and the
    consistency ratio (the spec parser already refused an inconsistent matrix)."""
    from evaluation.harness.ahp import ahp_weights

    matrix = (data.get("ahp") or {}).get("matrix")
    if not matrix:
        return {}
    result = ahp_weights(matrix)
    return {
        "criteria": [str(entry["task"]) for entry in data.get("tasks") or []],
        "matrix": matrix,
        "weights": [float(w) for w in result.weights],
        "consistency_ratio": float(result.consistency_ratio),
    }


def _members(user: Any, namespace: str, data: dict[str, Any]) -> list[tuple[EvalTask, float]]:
    members = []
    for index, entry in enumerate(data.get("tasks") or []):
        ref = str(entry["task"])
        param = f"tasks[{index}].task"
        members.append((_suite_task(user, namespace, ref, param), float(entry.get("weight", 1.0))))
    return members


def _suite_task(user: Any, namespace: str, ref: str, param: str) -> EvalTask:
    if "/" in ref:
        return resolve_task(user, ref, param)
    for candidate in (namespace, BUILTIN_NAMESPACE):
        found = tasks_of(user).filter(namespace=candidate, name=ref).first()
        if found is not None:
            return found
    raise NotFound(f"{param}: no task '{ref[:100]}' in {namespace} or the built-ins.", param=param)


def _save_members(suite: EvalSuite, members: list[tuple[EvalTask, float]]) -> None:
    SuiteTask.objects.filter(suite=suite).delete()
    seen: set[int] = set()
    for position, (task, weight) in enumerate(members):
        if task.pk in seen:
            raise PlatformError(
                f"tasks[{position}].task: {task} is listed twice.",
                code="invalid_suite",
                param=f"tasks[{position}].task",
            )
        seen.add(task.pk)
        SuiteTask.objects.create(suite=suite, task=task, weight=weight, position=position)


def update_suite(
    user: Any, suite: EvalSuite, yaml_text: str | None = None, visibility: str | None = None
) -> EvalSuite:
    """Replace a suite's YAML (same name) and/or visibility; 403 for a built-in."""
    _check_writable(user, suite)
    with transaction.atomic():
        if yaml_text is not None:
            data = parse_suite_source(yaml_text)
            if data["suite"] != suite.name:
                raise PlatformError(
                    f"suite: the name must stay '{suite.name}'.",
                    code="invalid_suite",
                    param="suite",
                )
            members = _members(user, suite.namespace, data)
            suite.source = yaml_text
            _apply_suite_spec(suite, data)
            _save_members(suite, members)
        if visibility is not None:
            suite.visibility = _check_visibility(suite.owner_org or suite.owner_user, visibility)
        suite.save()
    return suite


def delete_suite(user: Any, suite: EvalSuite) -> None:
    """Delete a suite no run or leaderboard uses (409 otherwise)."""
    _check_writable(user, suite)
    if suite.runs.exists() or suite.leaderboards.exists():
        raise Conflict(f"{suite} is used by a run or a leaderboard.", code="suite_in_use")
    suite.delete()


def suites_of(user: Any) -> QuerySet[EvalSuite]:
    ensure_builtin()
    return EvalSuite.objects.restrict(user, "read")


def resolve_suite(user: Any, ref: str, param: str = "suite") -> EvalSuite:
    """The suite ``namespace/name`` names if ``user`` may read it; NotFound (404) else."""
    namespace, name = _split_ref(ref, param)
    suite = suites_of(user).filter(namespace=namespace, name=name).first()
    if suite is None:
        raise NotFound(f"No such evaluation suite: {str(ref)[:100]}", param=param)
    return suite


def suite_tasks(suite: EvalSuite) -> list[tuple[EvalTask, float]]:
    """The suite's tasks in order, with their declared weights."""
    members = suite.members.select_related("task").order_by("position", "pk")
    return [(m.task, m.weight) for m in members]


# --- built-ins ------------------------------------------------------------------------


@functools.cache
def builtin_files(kind: str) -> tuple[Path, ...]:
    """The YAML files the project ships of ``kind`` (``tasks``, ``suites``): read from
    disk once per process, since every catalogue read checks them."""
    folder = BUILTIN_DIR / kind
    return tuple(sorted(folder.glob("*.yaml"))) if folder.is_dir() else ()


def ensure_builtin() -> None:
    """Sync the built-ins once: when the project ships some and none are loaded yet."""
    if builtin_files("tasks") and not EvalTask.objects.filter(builtin=True).exists():
        try:
            sync_builtin()
        except IntegrityError:
            logger.info("built-in evaluations were synced by another process meanwhile")


def sync_builtin() -> dict[str, int]:
    """Load ``evaluation/builtin/tasks/*.yaml`` then ``suites/*.yaml`` into the
    ``openmaas`` organisation, public and ``builtin``; a changed file updates its row.
    Idempotent; returns how many tasks and suites were created or changed."""
    org, _ = Organization.objects.get_or_create(
        name=BUILTIN_NAMESPACE, defaults={"display_name": BUILTIN_NAMESPACE}
    )
    changed = {"tasks": 0, "suites": 0}
    with transaction.atomic():
        for path in builtin_files("tasks"):
            changed["tasks"] += _sync_task(org, path.read_text(encoding="utf-8"))
        for path in builtin_files("suites"):
            changed["suites"] += _sync_suite(org, path.read_text(encoding="utf-8"))
    return changed


def _sync_task(org: Organization, text: str) -> int:
    _, spec_json, digest = parse_task_source(text)
    task = EvalTask.objects.filter(namespace=org.name, name=spec_json["task"]).first()
    if task is not None and task.spec_sha256 == digest and task.source == text:
        return 0
    task = task or EvalTask(builtin=True, visibility=Visibility.PUBLIC)
    task.set_owner(org)
    task.source = text
    _apply_task_spec(task, spec_json, digest)
    task.save()
    return 1


def _sync_suite(org: Organization, text: str) -> int:
    data = parse_suite_source(text)
    suite = EvalSuite.objects.filter(namespace=org.name, name=data["suite"]).first()
    if suite is not None and suite.source == text:
        return 0
    suite = suite or EvalSuite(builtin=True, visibility=Visibility.PUBLIC)
    suite.set_owner(org)
    suite.source = text
    _apply_suite_spec(suite, data)
    members = []
    for index, entry in enumerate(data.get("tasks") or []):
        ref = str(entry["task"]).rpartition("/")[2]
        task = EvalTask.objects.filter(namespace=org.name, name=ref).first()
        if task is None:
            raise NotFound(f"Built-in suite {suite.name}: tasks[{index}]: no task '{ref}'.")
        members.append((task, float(entry.get("weight", 1.0))))
    suite.save()
    _save_members(suite, members)
    return 1
