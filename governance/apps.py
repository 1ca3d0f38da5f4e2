from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A compliance report advances when its evaluation run finishes, in whichever
        # process finishes it (the sweep catches the rest).
        from governance.services import compliance

        compliance.connect()
