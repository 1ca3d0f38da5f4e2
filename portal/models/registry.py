"""The model registry: repos ``namespace/name`` with immutable versions and files."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from portal.models.accounts import namespace_validator
from portal.models.ownership import OwnedModel


class ModelRepo(OwnedModel):
    """A model repository; its card is README.md with YAML front matter (HF convention)."""

    name = models.CharField(max_length=96, validators=[namespace_validator])
    description = models.TextField(blank=True)
    card = models.TextField(blank=True, help_text="README.md body")
    card_data = models.JSONField(default=dict, blank=True, help_text="Parsed front matter")
    pipeline_tag = models.CharField(max_length=64, blank=True)
    license = models.CharField(max_length=64, blank=True)
    tags = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    price_input_cny_per_m = models.DecimalField(
        max_digits=12, decimal_places=4, default=0, help_text="CNY per million prompt tokens"
    )
    price_output_cny_per_m = models.DecimalField(
        max_digits=12, decimal_places=4, default=0, help_text="CNY per million completion tokens"
    )

    class Meta:
        ordering = ["namespace", "name"]
        constraints = [
            models.UniqueConstraint(fields=["namespace", "name"], name="unique_model_repo"),
        ]

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.namespace}/{self.name}"

    def latest_version(self) -> ModelVersion | None:
        return self.versions.order_by("-number").first()


class ModelVersion(models.Model):
    """An immutable snapshot of a repo's files; ``revision`` hashes its manifest."""

    repo = models.ForeignKey(ModelRepo, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    revision = models.CharField(max_length=64)
    architecture = models.CharField(max_length=128, blank=True)
    model_type = models.CharField(max_length=64, blank=True)
    config = models.JSONField(default=dict)
    base_model = models.CharField(max_length=200, blank=True)
    # A LoRA adapter is a version of its own repo that runs on top of ``base_version``
    # (served on that version's replicas); full weights have none.
    base_version = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="adapters"
    )
    has_chat_template = models.BooleanField(default=False)
    total_bytes = models.BigIntegerField(default=0)
    message = models.CharField(max_length=200, blank=True)
    # Set by an admin only: the version's code may run on nodes (``trust_remote_code``).
    trusted = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["repo", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["repo", "number"], name="unique_model_version"),
        ]

    def __str__(self) -> str:
        return f"{self.repo.full_name}@v{self.number}"


class ModelFile(models.Model):
    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="files")
    path = models.CharField(max_length=512)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    object_key = models.CharField(max_length=512)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(fields=["version", "path"], name="unique_model_file"),
        ]

    def __str__(self) -> str:
        return self.path
