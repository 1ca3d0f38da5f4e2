"""Users and organisations: sign-up, organisations, memberships, namespaces."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from portal.errors import Conflict, NotFound, PermissionDenied, PlatformError
from portal.models import Membership, Organization, Role
from portal.models.accounts import namespace_validator

User = get_user_model()


def namespace_taken(name: str) -> bool:
    """Users and organisations share one namespace (``owner/name`` must be unambiguous)."""
    return (
        User.objects.filter(username__iexact=name).exists()
        or Organization.objects.filter(name__iexact=name).exists()
    )


def _check_namespace(name: str) -> None:
    try:
        namespace_validator(name)
    except ValidationError as exc:
        raise PlatformError(
            f"'{name}' is not a valid name: {exc.messages[0]}", code="invalid_name", param="name"
        ) from exc
    if namespace_taken(name):
        raise Conflict(f"The name '{name}' is already taken.", code="name_taken")


@transaction.atomic
def sign_up(username: str, password: str, email: str = "") -> Any:
    """Create a user; raises PlatformError on a bad or taken name or a weak password."""
    _check_namespace(username)
    try:
        validate_password(password, User(username=username, email=email))
    except ValidationError as exc:
        raise PlatformError(" ".join(exc.messages), code="weak_password", param="password") from exc
    return User.objects.create_user(username=username, password=password, email=email)


@transaction.atomic
def create_organization(actor: Any, name: str, display_name: str = "") -> Organization:
    """Create an organisation owned by ``actor``."""
    _check_namespace(name)
    org = Organization.objects.create(name=name, display_name=display_name or name)
    Membership.objects.create(organization=org, user=actor, role=Role.OWNER)
    return org


def require_manager(actor: Any, org: Organization) -> None:
    if actor.is_superuser:
        return
    role = Membership.objects.filter(organization=org, user=actor).values_list("role", flat=True)
    if not role:
        raise NotFound("Organisation not found.")
    if role[0] not in Role.managers():
        raise PermissionDenied("Only the organisation's owners and admins may do this.")


@transaction.atomic
def set_member(actor: Any, org: Organization, username: str, role: str) -> Membership:
    """Add a member or change their role; only owners may grant or take the owner role."""
    require_manager(actor, org)
    if role not in Role.values:
        raise PlatformError(f"Unknown role '{role}'.", code="invalid_role", param="role")
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"No user '{username}'.", param="username")
    member, _ = Membership.objects.select_for_update().get_or_create(
        organization=org, user=user, defaults={"role": role}
    )
    is_owner = (
        actor.is_superuser
        or Membership.objects.filter(organization=org, user=actor, role=Role.OWNER).exists()
    )
    if Role.OWNER in (role, member.role) and not is_owner:
        raise PermissionDenied("Only owners may grant or take the owner role.")
    member.role = role
    member.save(update_fields=["role"])
    return member


@transaction.atomic
def remove_member(actor: Any, org: Organization, username: str) -> None:
    require_manager(actor, org)
    members = Membership.objects.select_for_update().filter(organization=org)
    target = members.filter(user__username=username).first()
    if target is None:
        raise NotFound(f"'{username}' is not a member.", param="username")
    if target.role == Role.OWNER and members.filter(role=Role.OWNER).count() == 1:
        raise Conflict("An organisation keeps at least one owner.", code="last_owner")
    target.delete()


def may_write_owner(user: Any, owner: Any) -> bool:
    """A user publishes under their own name and under organisations they manage."""
    if user.is_superuser:
        return True
    if isinstance(owner, Organization):
        return Membership.objects.filter(
            user=user, organization=owner, role__in=Role.managers()
        ).exists()
    return bool(owner.pk == user.pk)


def resolve_owner(name: str) -> Any:
    """The user or organisation whose namespace is ``name``; raises NotFound."""
    org = Organization.objects.filter(name=name).first()
    if org is not None:
        return org
    user = User.objects.filter(username=name).first()
    if user is None:
        raise NotFound(f"No user or organisation named '{name}'.")
    return user
