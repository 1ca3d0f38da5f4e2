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
