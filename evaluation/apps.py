from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A fine-tune's ``auto_eval``: checked at creation, run when it succeeds, and
        # written into the model's card when that run succeeds.
        from evaluation.services import auto_eval, leaderboards

        auto_eval.register()
        # A leaderboard submission follows its run to finished or failed.
        leaderboards.connect()
