"""Lineage: where a version came from (its parent chain and the steps on the way) and
what used it (processing runs, fine-tunes, evaluations), both ways.

Other sub-platforms call :func:`record_use` when a job starts reading a version (after
:func:`~datasets.services.versions.require_usable`) and :func:`release_use` when it ends.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from datasets.models import DatasetJob, DatasetUse, DatasetVersion, JobKind
from datasets.services.versions import require_usable

MAX_ANCESTORS = 50


def record_use(version: DatasetVersion, kind: str, ref: str, label: str = "") -> DatasetUse:
    """Mark ``version`` as read by job ``ref``; idempotent. Raises Conflict when the
    version may not feed a job (not validated, or invalid)."""
    require_usable(version)
    try:
        with transaction.atomic():
            return DatasetUse.objects.create(
                version=version, kind=kind, ref=ref[:64], label=label[:200]
            )
    except IntegrityError:
        use = DatasetUse.objects.get(version=version, kind=kind, ref=ref[:64])
        if not use.active:
            use.active = True
            use.save(update_fields=["active"])
        return use


def release_use(version: DatasetVersion, kind: str, ref: str) -> None:
    """The job ``ref`` no longer reads ``version``: it may be deleted again."""
    DatasetUse.objects.filter(version=version, kind=kind, ref=ref[:64]).update(active=False)


def _version_ref(version: DatasetVersion) -> dict[str, Any]:
    return {
        "dataset": version.repo.full_name,
        "version": version.number,
        "revision": version.revision,
        "state": version.state,
    }


def lineage(version: DatasetVersion, readable: Any) -> dict[str, Any]:
    """Ancestors (nearest first, with the steps that made each child), children made
    from this version, and the jobs that used it. ``readable`` is a queryset of the
    versions the asking user may see: others are counted, not named."""
    ancestors: list[dict[str, Any]] = []
    node = version
    while node.parent_id is not None and len(ancestors) < MAX_ANCESTORS:
        parent = node.parent
        assert parent is not None
        entry = {"steps": node.steps, **_version_ref(parent)}
        if not readable.filter(pk=parent.pk).exists():
            entry = {"hidden": True}
        ancestors.append(entry)
        node = parent
    children = version.children.select_related("repo")
    visible = [
        {"steps": child.steps, **_version_ref(child)}
        for child in children.filter(pk__in=readable.values("pk"))
    ]
    made_by = DatasetJob.objects.filter(output=version, kind=JobKind.PROCESS).first()
    return {
        "ancestors": ancestors,
        "children": visible,
        "hidden_children": children.count() - len(visible),
        "made_by_job": made_by.pk if made_by else None,
        "used_by": [
            {
                "kind": use.kind,
                "ref": use.ref,
                "label": use.label,
                "active": use.active,
                "created_at": use.created_at.isoformat(),
            }
            for use in version.uses.all()
        ],
    }
