from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "compute"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from compute.services.deployments import is_served
        from portal.hooks import register_served_check

        register_served_check(is_served)
