"""API keys: ``sk-`` plus a high-entropy secret, stored only as a SHA-256 hash.

Each key carries what it may do (scopes, a model allow-list) and how fast (requests and
tokens per minute, concurrent requests; null means the platform default from settings),
and optionally the organisation it bills to.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "sk-"
VISIBLE_CHARS = 8

# What a key may be used for. ``x:read`` is implied by ``x``.
SCOPES = (
    "inference",
    "files",
    "files:read",
    "fine_tuning",
    "fine_tuning:read",
    "evaluation",
    "evaluation:read",
    "moderation",
)


def all_scopes() -> list[str]:
    return list(SCOPES)


def scope_allows(scopes: list[str] | tuple[str, ...] | frozenset[str], needed: str) -> bool:
    """Whether ``scopes`` grant ``needed`` (a write scope grants its read variant)."""
    return needed in scopes or (needed.endswith(":read") and needed.removesuffix(":read") in scopes)


def model_namespace(served_name: str) -> str:
    """Whose model a served name is: ``owner`` of ``owner/name``, and of a fine-tune
    ``ft:{base}:{owner}:{suffix}:{job}`` (OpenAI's naming) the owner, not the base's."""
    if served_name.startswith("ft:"):
        parts = served_name.split(":")
        if len(parts) == 5 and parts[2]:
            return parts[2]
    return served_name.split("/", 1)[0]


def model_allowed(allowed: list[str] | tuple[str, ...], served_name: str) -> bool:
    """An empty allow-list allows every model; ``namespace/*`` allows a namespace (a
    fine-tune belongs to its owner's namespace)."""
    if not allowed:
        return True
    return served_name in allowed or f"{model_namespace(served_name)}/*" in allowed


def hash_key(raw: str) -> str:
    """The stored form of a key. SHA-256 suffices: keys carry 256 bits of entropy."""
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class APIKeyQuerySet(models.QuerySet["APIKey"]):
    def active(self) -> APIKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class APIKey(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, help_text="First characters, shown to identify it")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    scopes = models.JSONField(default=all_scopes, blank=True)
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Served names or 'namespace/*'; empty: any model"
    )
    rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute; empty: KEY_DEFAULT_RPM"
    )
    tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="Tokens per minute; empty: KEY_DEFAULT_TPM"
    )
    max_concurrent = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests in flight; empty: KEY_DEFAULT_MAX_CONCURRENT"
    )
    organization = models.ForeignKey(
        "portal.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The organisation this key's usage and budgets count against",
    )

    objects = APIKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name or 'unnamed'})"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()
