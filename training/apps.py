from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from compute.services.workloads import kinds

        from datasets.services import consumers
        from training.services.runs import TrainingKind

        if "training" not in kinds:
            kinds.register("training", TrainingKind())
        # A job waiting for its dataset's validation moves on as soon as it settles.
        consumers.on_settled(_advance_jobs_of)


def _advance_jobs_of(version_id: int) -> None:
    from training.tasks import advance_waiting_jobs

    advance_waiting_jobs.delay(version_id)
