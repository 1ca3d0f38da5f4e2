"""OpenAPI descriptions of the platform's bearer authentications (drf-spectacular)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "portal.auth.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return dict(build_bearer_security_scheme_object("Authorization", "Bearer"))


class NodeTokenScheme(OpenApiAuthenticationExtension):
    target_class = "compute.api.agent.NodeTokenAuthentication"
    name = "nodeToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return dict(build_bearer_security_scheme_object("Authorization", "Bearer"))


ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "DRF's error shape: ``detail`` (and usually ``code``, sometimes ``param``); "
    "a 400 from a serializer maps each field to its list of messages instead.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "param": {"type": "string"},
    },
    "additionalProperties": True,
}
ERROR_DESCRIPTIONS = {
    "400": "Invalid request (malformed body, bad field values or query parameters).",
    "401": "Not authenticated.",
    "403": "Authenticated but not allowed (or a CSRF failure).",
    "404": "Not found, or not visible to you.",
    "409": "Conflicts with the current state.",
    "413": "Request body too large.",
    "415": "Unsupported media type.",
    "429": "Too many requests; see Retry-After.",
}
_BODY_METHODS = {"post", "put", "patch"}


def _error_statuses(method: str, path: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses an operation can answer (every one may be throttled or refused)."""
    statuses = ["400", "401", "403", "429"]
    if "{" in path or method in _BODY_METHODS:
        statuses.append("404")  # the path's object, or one the body names
    if method in _BODY_METHODS or method == "delete":
        statuses.append("409")
    if method in _BODY_METHODS:
        statuses += ["413", "415"]
    return statuses


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: document the error statuses of every operation
    with one ``Error`` component in DRF's shape."""
    result.setdefault("components", {}).setdefault("schemas", {})[ERROR_COMPONENT] = ERROR_SCHEMA
    ref = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in _error_statuses(method, path, operation):
                responses.setdefault(
                    status,
                    {
                        "description": ERROR_DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": ref}},
                    },
                )
    return result
