"""Dataset repos: create, edit the card, star, delete."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from datasets.models import DatasetRepo, DatasetStar, DatasetUse, Origin
from portal.errors import Conflict, PermissionDenied, PlatformError
from portal.models import Visibility
from portal.services.accounts import may_write_owner
from portal.services.registry import split_card

SIZE_CATEGORIES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)


def create_repo(
    user: Any,
    owner: Any,
    name: str,
    *,
    visibility: str = Visibility.PRIVATE,
    description: str = "",
    card: str = "",
    origin: str = Origin.HUB,
) -> DatasetRepo:
    """Create ``owner/name``; raises PermissionDenied, Conflict (taken) or PlatformError."""
    if not may_write_owner(user, owner):
        raise PermissionDenied("You may not create datasets under this owner.", param="owner")
    repo = DatasetRepo(
        name=name, visibility=visibility, description=description, origin=origin, created_by=user
    )
    repo.set_owner(owner)
    try:
        # The unique name is checked by the insert (a 409), not here (a 400).
        repo.full_clean(
            exclude=["created_by", "owner_user", "owner_org"], validate_constraints=False
        )
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise PlatformError(f"{field}: {' '.join(messages)}", param=field) from exc
    apply_card(repo, card)
    try:
        with transaction.atomic():
            repo.save()
    except IntegrityError as exc:
        raise Conflict(f"A dataset named {repo.full_name} already exists.", param="name") from exc
    return repo


def apply_card(repo: DatasetRepo, text: str) -> None:
    """Set the README (YAML front matter + body) and the fields it declares."""
    try:
        data, body = split_card(text) if text else ({}, "")
    except PlatformError as exc:  # the registry's error names model directories
        raise PlatformError(exc.message, code="invalid_card", param="card") from exc
    repo.card = body
    repo.card_data = json.loads(json.dumps(data, default=str))
    repo.license = str(data.get("license") or repo.license or "")[:64]
    repo.languages = _string_list(data.get("language")) or repo.languages
    repo.tags = _string_list(data.get("tags")) or repo.tags
    repo.task_categories = _string_list(data.get("task_categories")) or repo.task_categories
    sizes = _string_list(data.get("size_categories"))
    repo.size_category = sizes[0][:32] if sizes else repo.size_category


def _string_list(value: Any) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item)[:64] for item in items][:50]


def update_repo(repo: DatasetRepo, **changes: Any) -> DatasetRepo:
    """Change the description, visibility or card (given as README text)."""
    if "card" in changes:
        apply_card(repo, changes.pop("card") or "")
    for field in ("description", "visibility"):
        if field in changes:
            setattr(repo, field, changes[field])
    try:
        repo.clean()
    except ValidationError as exc:
        raise PlatformError(" ".join(exc.messages), param="visibility") from exc
    repo.save()
    return repo


def size_category(rows: int) -> str:
    """Hugging Face's ``size_categories`` bucket for a row count."""
    for bound, label in SIZE_CATEGORIES:
        if rows < bound:
            return label
    return "n>100M"


def set_star(user: Any, repo: DatasetRepo, starred: bool) -> DatasetRepo:
    """Star or unstar; idempotent. Returns the repo with its fresh star count."""
    with transaction.atomic():
        if starred:
            _, created = DatasetStar.objects.get_or_create(user=user, repo=repo)
            delta = 1 if created else 0
        else:
            delta = -DatasetStar.objects.filter(user=user, repo=repo).delete()[0]
        if delta:
            DatasetRepo.objects.filter(pk=repo.pk).update(star_count=F("star_count") + delta)
    repo.refresh_from_db(fields=["star_count"])
    return repo


def delete_repo(repo: DatasetRepo) -> None:
    """Delete a repo and its objects; refused while a job uses one of its versions."""
    from datasets.services.versions import delete_repo_objects

    if DatasetUse.objects.filter(version__repo=repo, active=True).exists():
        raise Conflict("A version of this dataset is in use by a job.", code="dataset_in_use")
    if repo.origin == Origin.FILES:
        raise Conflict("This dataset is a file: delete it with DELETE /v1/files/{id}.")
    from datasets.services.versions import refuse_while_jobs_run

    refuse_while_jobs_run(repo.jobs.all())
    delete_repo_objects(repo)
    with transaction.atomic():
        DatasetUse.objects.filter(version__repo=repo).delete()
        repo.delete()
