"""Small builders for rows many tests need."""

from __future__ import annotations

from typing import Any

from compute.models import Deployment
from portal.models import ModelRepo, ModelVersion


def model_repo(owner: Any, name: str, visibility: str = "public") -> ModelRepo:
    """A registered model (no files) owned by a user or an organisation, with version 1."""
    repo = ModelRepo(name=name, visibility=visibility)
    repo.set_owner(owner)
    repo.save()
    ModelVersion.objects.create(repo=repo, number=1, revision="0" * 64, model_type="llama")
    return repo


def deployment(owner: Any, name: str, visibility: str = "public") -> Deployment:
    """An active deployment of a fresh model, with no replica yet."""
    repo = model_repo(owner, name, visibility)
    return Deployment.objects.create(model_version=repo.versions.get(), served_name=repo.full_name)
