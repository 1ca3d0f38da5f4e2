"""Moderation policies of an organisation or user, optionally narrowed to one deployment
(served name) or one API key: create, change (``version`` += 1) and delete.

The documents (``rules``, ``offenders``, ``labels``) are validated by
:mod:`governance.policy` and stored as given (what a policy leaves out keeps the
platform default when the gateway builds it). Every change is an audit event and, once
committed, moves the gateway's snapshot counter so every process reloads.

Tenancy: :func:`visible_policies` is the one filter (``restrict()``; staff also see rows
with no owner). A user owns policies for themselves; an organisation's owners and admins
for the organisation.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from governance import policy as policy_doc
from governance.models import Policy
from governance.services import audit, snapshot
from governance.services.scope import is_staff
from portal.errors import Conflict, PermissionDenied, PlatformError
from portal.models import APIKey, Organization
from portal.models.keys import model_namespace
from portal.models.ownership import Action

FIELDS = (
    *("name", "description", "enabled"),
    *("served_name", "api_key"),
    *("rules", "offenders", "labels"),
)
DOCUMENTS = {
    "rules": policy_doc.parse_rules,
    "offenders": policy_doc.parse_offenders,
    "labels": policy_doc.parse_labels,
}


def visible_policies(user: Any, action: Action = "read") -> QuerySet[Policy]:
    """The policies ``user`` may read (or ``"write"``); the single tenancy filter."""
    return with_platform(Policy.objects.restrict(user, action), Policy, user)


def with_platform(queryset: Any, model: Any, user: Any) -> Any:
    """``queryset`` (already restricted) plus, for staff, the rows with no owner."""
    if not is_staff(user) or getattr(user, "is_superuser", False):
        return queryset
    platform = Q(owner_user__isnull=True, owner_org__isnull=True)
    return queryset | model.objects.filter(platform)


def bump_on_commit() -> None:
    """After the current transaction commits, tell every gateway to reload its snapshot."""
    transaction.on_commit(snapshot.bump)


def check_owner(actor: Any, owner: Any) -> None:
    """PermissionDenied unless ``actor`` may govern ``owner``'s traffic: themselves, or an
    organisation they own or administer."""
    from portal.services.accounts import may_write_owner

    if not may_write_owner(actor, owner):
        name = owner.name if isinstance(owner, Organization) else owner.get_username()
        raise PermissionDenied(f"You may not manage the content governance of '{name}'.")


def create_policy(actor: Any, owner: Any, data: dict[str, Any]) -> Policy:
    """A new policy of ``owner`` (a user or an organisation) from ``data`` (the fields
    of :data:`FIELDS`; ``api_key`` an id or None). 403 unless ``actor`` may govern
    ``owner``; 400 naming the field for an invalid document, a key not ``owner``'s or a
    served name not ``owner``'s; 409 when the name is taken."""
    check_owner(actor, owner)
    row = Policy(created_by=actor)
    row.set_owner(owner)
    _assign(row, {"rules": {}, "offenders": {}, "labels": {}, **data})
    with transaction.atomic():
        _save(row, force_insert=True)
        audit.record(
            "policy.create", actor=actor, org=row.owner_org, **_target(row), data=_summary(row)
        )
        bump_on_commit()
    return row


def update_policy(actor: Any, policy: Policy, data: dict[str, Any]) -> Policy:
    """Change the fields given in ``data``; the version grows by one. Same errors as
    :func:`create_policy`. ``actor`` must be allowed to write ``policy`` (the caller
    found it through :func:`visible_policies` with ``"write"``)."""
    changed = sorted(k for k in data if k in FIELDS)
    _assign(policy, data)
    with transaction.atomic():
        locked = Policy.objects.select_for_update().get(pk=policy.pk)
        policy.version = locked.version + 1
        _save(policy)
        summary = {**_summary(policy), "changed": changed}
        audit.record(
            "policy.update", actor=actor, org=policy.owner_org, **_target(policy), data=summary
        )
        bump_on_commit()
    return policy


def delete_policy(actor: Any, policy: Policy) -> None:
    """Delete the policy (the gateway falls back to the next one that applies)."""
    with transaction.atomic():
        audit.record(
            "policy.delete",
            actor=actor,
            org=policy.owner_org,
            **_target(policy),
            data={"name": policy.name, "namespace": policy.namespace, "version": policy.version},
        )
        policy.delete()
        bump_on_commit()


def compiled(row: Policy) -> policy_doc.Policy:
    """The policy the gateway applies for ``row``: its documents over the defaults."""
    return policy_doc.build(row.rules, row.offenders, row.labels, ident=row.pk, version=row.version)


def _assign(row: Policy, data: dict[str, Any]) -> None:
    for name, parse in DOCUMENTS.items():
        if name in data:
            try:
                _no_nul(data[name], name)
                parse(data[name])
            except policy_doc.PolicyError as exc:
                raise PlatformError(
                    f"{exc.path}: {exc.message}", code="invalid_policy", param=exc.path
                ) from exc
            setattr(row, name, data[name])
    for name in ("name", "description", "enabled"):
        if name in data:
            setattr(row, name, data[name])
    if "served_name" in data:
        row.served_name = _served_name(row, data["served_name"] or "")
    if "api_key" in data:
        row.api_key = _key_of(row, data["api_key"])


def _no_nul(value: Any, path: str) -> None:
    """PostgreSQL's JSON cannot hold U+0000; refuse it where it is, not with a 500."""
    if isinstance(value, str) and "\x00" in value:
        raise policy_doc.PolicyError(path, "must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key, path)
            _no_nul(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _no_nul(item, f"{path}[{index}]")


def _served_name(row: Policy, served_name: str) -> str:
    if served_name and model_namespace(served_name) != row.namespace:
        raise PlatformError(
            f"served_name: '{served_name[:200]}' is not a model of '{row.namespace}' "
            "(a deployment's policy belongs to the model's owner).",
            code="invalid_policy",
            param="served_name",
        )
    return served_name


def _key_of(row: Policy, key_id: Any) -> APIKey | None:
    """The owner's API key with this id: a user's own key, or one of the organisation's
    (its usage counts against it)."""
    if key_id is None or key_id == "":
        return None
    if isinstance(key_id, APIKey):
        key_id = key_id.pk
    mine = Q(organization_id=row.owner_org_id) if row.owner_org_id else Q(user_id=row.owner_user_id)
    key = None
    if isinstance(key_id, int) and not isinstance(key_id, bool) and 0 < key_id < 2**62:
        key = APIKey.objects.filter(mine, pk=key_id).first()
    if key is None:
        raise PlatformError(
            f"api_key: no API key {str(key_id)[:20]} of '{row.namespace}'.",
            code="invalid_policy",
            param="api_key",
        )
    return key


def _save(row: Policy, **kwargs: Any) -> None:
    try:
        with transaction.atomic():
            row.save(**kwargs)
    except IntegrityError as exc:
        raise Conflict(
            f"A policy '{row.namespace}/{row.name}' exists already.",
            code="name_taken",
            param="name",
        ) from exc


def _target(row: Policy) -> dict[str, str]:
    return {"target_type": "policy", "target_id": str(row.pk)}


def _summary(row: Policy) -> dict[str, Any]:
    """What the audit log keeps of a policy: everything but secrets (a key by prefix)."""
    return {
        "namespace": row.namespace,
        "name": row.name,
        "version": row.version,
        "served_name": row.served_name,
        "api_key": row.api_key.prefix if row.api_key is not None else "",
        "enabled": row.enabled,
        "rules": row.rules,
        "offenders": row.offenders,
        "labels": row.labels,
    }
