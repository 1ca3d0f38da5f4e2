"""Routes: OpenAI's ``/v1/fine_tuning`` (wired by ``portal.urls`` before the /v1 catch-all),
the runner API under ``/api/training/runner/`` and the platform's own API under
``/api/fine-tuning/``."""

from django.urls import path

from training import api, runner_api, v1

v1_urlpatterns = [
    path("v1/fine_tuning/jobs", v1.JobsView.as_view(), name="v1-fine-tuning-jobs"),
    path(
        "v1/fine_tuning/jobs/<str:fine_tuning_job_id>",
        v1.JobView.as_view(),
        name="v1-fine-tuning-job",
    ),
    path(
        "v1/fine_tuning/jobs/<str:fine_tuning_job_id>/cancel",
        v1.CancelView.as_view(),
        name="v1-fine-tuning-cancel",
    ),
    path(
        "v1/fine_tuning/jobs/<str:fine_tuning_job_id>/events",
        v1.EventsView.as_view(),
        name="v1-fine-tuning-events",
    ),
    path(
        "v1/fine_tuning/jobs/<str:fine_tuning_job_id>/checkpoints",
        v1.CheckpointsView.as_view(),
        name="v1-fine-tuning-checkpoints",
    ),
]

runner_urlpatterns = [
    path("events", runner_api.EventsView.as_view(), name="training-runner-events"),
    path("checkpoints", runner_api.CheckpointsView.as_view(), name="training-runner-checkpoints"),
    path(
        "checkpoints/<int:step>/complete",
        runner_api.CheckpointCompleteView.as_view(),
        name="training-runner-checkpoint-complete",
    ),
    path("result", runner_api.ResultView.as_view(), name="training-runner-result"),
    path(
        "result/complete",
        runner_api.ResultCompleteView.as_view(),
        name="training-runner-result-complete",
    ),
]

api_urlpatterns = [
    path("jobs/<str:job_id>/exports/", api.ExportsView.as_view(), name="fine-tuning-exports"),
]
