"""OpenAI's ``/v1/fine_tuning/jobs`` in Django, so the official SDK works unchanged:
create, list, retrieve, cancel, events and checkpoints. Errors are in OpenAI's shape;
another tenant's job is a 404. A key needs ``fine_tuning`` to create or cancel and
``fine_tuning:read`` to read; a browser session needs neither (as for ``/v1/files``).

The work is in :mod:`training.services.jobs`; these views check, call and shape.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.parsers import SafeJSONParser
from portal.api.v1 import JSONOnly, KeyScope, error_responses, list_limit, v1_exception_handler
from portal.auth import acting_user
from portal.errors import PlatformError
from portal.models import APIKey
from training.services import jobs

CREATE_FIELDS = (
    "model",
    "training_file",
    "validation_file",
    "suffix",
    "seed",
    "metadata",
    "method",
    "hyperparameters",
    "adapter",
    "gpus",
    "gpu_model",
    "priority",
    "auto_eval",
)
IGNORED_FIELDS = ("integrations",)


class FineTuningView(APIView):
    """Bearer key (or session), the ``fine_tuning`` scopes, OpenAI-shaped JSON and errors."""

    permission_classes = [IsAuthenticated, KeyScope]
    scope = "fine_tuning"
    renderer_classes = [JSONRenderer]
    parser_classes = [SafeJSONParser]
    content_negotiation_class = JSONOnly

    def get_exception_handler(self) -> Any:
        return v1_exception_handler


def _grant(request: Request) -> Any:
    from portal.services.keys import grant_for, session_grant

    key = request.auth
    if isinstance(key, APIKey):
        return grant_for(key)
    return session_grant(acting_user(request))


def _create_arguments(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise PlatformError("The request body must be a JSON object.")
    unknown = set(body) - set(CREATE_FIELDS) - set(IGNORED_FIELDS)
    if unknown:
        name = sorted(unknown)[0][:40]
        raise PlatformError(f"Unrecognized request argument supplied: {name}", param=name)
    for required in ("model", "training_file"):
        if body.get(required) in (None, ""):
            raise PlatformError(
                f"Missing required parameter: '{required}'.",
                code="missing_required_parameter",
                param=required,
            )
    arguments = {name: body[name] for name in CREATE_FIELDS if body.get(name) is not None}
    arguments.setdefault("suffix", "")
    return arguments


def _page(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": items, "has_more": has_more}


def _metadata_filter(request: Request) -> dict[str, str] | None:
    """OpenAI's ``metadata[k]=v`` query parameters; ``metadata=null`` for jobs without."""
    query = request.query_params
    if query.get("metadata") == "null":
        return {}
    pairs = {
        key[len("metadata[") : -1]: str(query.get(key, ""))
        for key in query
        if key.startswith("metadata[") and key.endswith("]")
    }
    return pairs or None


# --- schema ---------------------------------------------------------------------------

JOB = inline_serializer(
    "FineTuningJob",
    {
        "id": serializers.CharField(),
        "object": serializers.CharField(help_text="Always 'fine_tuning.job'."),
        "created_at": serializers.IntegerField(),
        "error": serializers.JSONField(allow_null=True),
        "fine_tuned_model": serializers.CharField(allow_null=True),
        "finished_at": serializers.IntegerField(allow_null=True),
        "hyperparameters": serializers.JSONField(),
        "model": serializers.CharField(),
        "organization_id": serializers.CharField(),
        "result_files": serializers.ListField(child=serializers.CharField()),
        "seed": serializers.IntegerField(),
        "status": serializers.CharField(),
        "trained_tokens": serializers.IntegerField(allow_null=True),
        "training_file": serializers.CharField(),
        "validation_file": serializers.CharField(allow_null=True),
        "estimated_finish": serializers.IntegerField(allow_null=True),
        "integrations": serializers.JSONField(),
        "metadata": serializers.JSONField(allow_null=True),
        "method": serializers.JSONField(),
        "adapter": serializers.JSONField(),
        "gpus": serializers.IntegerField(),
        "gpu_model": serializers.CharField(allow_blank=True),
        "priority": serializers.IntegerField(),
        "task": serializers.CharField(help_text="'fine_tune', or 'export' (merge, quantise)."),
        "source_job": serializers.CharField(
            allow_null=True, help_text="An export's fine-tuning job."
        ),
        "export": serializers.JSONField(
            allow_null=True, help_text="An export's settings and, once done, its report."
        ),
    },
)
EVENT = inline_serializer(
    "FineTuningJobEvent",
    {
        "id": serializers.CharField(),
        "object": serializers.CharField(),
        "created_at": serializers.IntegerField(),
        "level": serializers.CharField(),
        "message": serializers.CharField(allow_blank=True),
        "data": serializers.JSONField(allow_null=True),
        "type": serializers.CharField(),
    },
)
CHECKPOINT = inline_serializer(
    "FineTuningJobCheckpoint",
    {
        "id": serializers.CharField(),
        "object": serializers.CharField(),
        "created_at": serializers.IntegerField(),
        "fine_tuned_model_checkpoint": serializers.CharField(),
        "fine_tuning_job_id": serializers.CharField(),
        "metrics": serializers.JSONField(),
        "step_number": serializers.IntegerField(),
    },
)


def _list_of(name: str, item: Any) -> Any:
    return inline_serializer(
        name,
        {
            "object": serializers.CharField(),
            "data": serializers.ListField(child=item),
            "has_more": serializers.BooleanField(),
        },
    )


CREATE = inline_serializer(
    "FineTuningJobCreate",
    {
        "model": serializers.CharField(help_text="A hub model 'owner/name' or 'owner/name@N'."),
        "training_file": serializers.CharField(
            help_text="A 'file-…' id or a dataset 'owner/name' / 'owner/name@N'."
        ),
        "validation_file": serializers.CharField(required=False, allow_null=True),
        "suffix": serializers.CharField(required=False, allow_null=True),
        "seed": serializers.IntegerField(required=False, allow_null=True),
        "metadata": serializers.DictField(child=serializers.CharField(), required=False),
        "method": serializers.JSONField(required=False),
        "hyperparameters": serializers.JSONField(required=False),
        "adapter": serializers.JSONField(required=False, help_text="LoRA settings or full."),
        "gpus": serializers.IntegerField(required=False),
        "gpu_model": serializers.CharField(required=False),
        "priority": serializers.IntegerField(required=False),
        "auto_eval": serializers.CharField(
            required=False, help_text="A suite 'namespace/name' to evaluate the result on."
        ),
    },
)
JOB_ID = OpenApiParameter("fine_tuning_job_id", str, OpenApiParameter.PATH)
PAGING = [
    OpenApiParameter("after", str, description="List the items after this id."),
    OpenApiParameter("limit", int, description="1 to 100 (default 20)."),
]


# --- views ----------------------------------------------------------------------------


class JobsView(FineTuningView):
    """Your fine-tuning jobs: list and create."""

    @extend_schema(
        operation_id="listFineTuningJobs",
        tags=["fine_tuning"],
        parameters=PAGING,
        responses={200: _list_of("FineTuningJobList", JOB), **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        """Your jobs, newest first; page with ``after`` and ``limit``."""
        query = request.query_params
        page = jobs.list_jobs(
            acting_user(request),
            after=query.get("after") or None,
            limit=list_limit(query.get("limit"), jobs.MAX_PAGE, jobs.DEFAULT_PAGE),
            metadata=_metadata_filter(request),
        )
        return Response(_page([jobs.job_object(job) for job in page.items], page.has_more))

    @extend_schema(
        operation_id="createFineTuningJob",
        tags=["fine_tuning"],
        request=CREATE,
        responses={200: JOB, **error_responses(400, 401, 403, 404, 429)},
    )
    def post(self, request: Request) -> Response:
        """Create a job; it is validated and queued, or waits while its file is validated."""
        job = jobs.create_job(
            acting_user(request), **_create_arguments(request.data), grant=_grant(request)
        )
        return Response(jobs.job_object(job))


class JobView(FineTuningView):
    @extend_schema(
        operation_id="retrieveFineTuningJob",
        tags=["fine_tuning"],
        parameters=[JOB_ID],
        responses={200: JOB, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, fine_tuning_job_id: str) -> Response:
        """One of your jobs."""
        return Response(jobs.job_object(jobs.get_job(acting_user(request), fine_tuning_job_id)))


class CancelView(FineTuningView):
    @extend_schema(
        operation_id="cancelFineTuningJob",
        tags=["fine_tuning"],
        request=None,
        parameters=[JOB_ID],
        responses={200: JOB, **error_responses(400, 401, 403, 404, 409)},
    )
    def post(self, request: Request, fine_tuning_job_id: str) -> Response:
        """Cancel a job that has not ended; its run on a node is stopped."""
        job = jobs.cancel_job(acting_user(request), fine_tuning_job_id)
        return Response(jobs.job_object(job))


class EventsView(FineTuningView):
    @extend_schema(
        operation_id="listFineTuningEvents",
        tags=["fine_tuning"],
        parameters=[JOB_ID, *PAGING],
        responses={
            200: _list_of("FineTuningJobEventList", EVENT),
            **error_responses(400, 401, 403, 404),
        },
    )
    def get(self, request: Request, fine_tuning_job_id: str) -> Response:
        """The job's events (status changes, messages, step metrics), newest first."""
        job = jobs.get_job(acting_user(request), fine_tuning_job_id)
        query = request.query_params
        page = jobs.list_events(
            job,
            after=query.get("after") or None,
            limit=list_limit(query.get("limit"), jobs.MAX_PAGE, jobs.DEFAULT_PAGE),
        )
        return Response(_page([jobs.event_object(e) for e in page.items], page.has_more))


class CheckpointsView(FineTuningView):
    @extend_schema(
        operation_id="listFineTuningJobCheckpoints",
        tags=["fine_tuning"],
        parameters=[JOB_ID, *PAGING],
        responses={
            200: _list_of("FineTuningJobCheckpointList", CHECKPOINT),
            **error_responses(400, 401, 403, 404),
        },
    )
    def get(self, request: Request, fine_tuning_job_id: str) -> Response:
        """The job's complete checkpoints, newest first."""
        job = jobs.get_job(acting_user(request), fine_tuning_job_id)
        query = request.query_params
        page = jobs.list_checkpoints(
            job,
            after=query.get("after") or None,
            limit=list_limit(query.get("limit"), jobs.MAX_PAGE, 10),
        )
        items = [jobs.checkpoint_object(c) for c in page.items]
        body = _page(items, page.has_more)
        body["first_id"] = items[0]["id"] if items else None
        body["last_id"] = items[-1]["id"] if items else None
        return Response(body)
