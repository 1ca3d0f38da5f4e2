from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from portal.api import schema  # noqa: F401 - registers the OpenAPI auth schemes
        from portal.services.keys import connect_invalidation

        connect_invalidation()
