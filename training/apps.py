import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


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
    """Queue or fail the jobs waiting for ``version_id`` (usually none: one query). A
    failure here must not disturb the ingest that settled the version; the beat task
    (``training.tasks.advance_waiting_jobs``) retries it."""
    from training.services.jobs import advance_waiting

    try:
        advance_waiting(version_id)
    except Exception:
        logger.exception("advancing the fine-tunes waiting for dataset version %s", version_id)
