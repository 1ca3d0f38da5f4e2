"""The platform's own fine-tuning API under ``/api/fine-tuning/`` (DRF, ``/api`` error
shape): what OpenAI's ``/v1/fine_tuning`` has no verb for. Today one: export a succeeded
LoRA fine-tune (merge it into its base, quantise, register the result as a new version).
A browser session or a key with the ``fine_tuning`` scope may call it.

The work is in :mod:`training.services.jobs`; these views check, call and shape.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.parsers import SafeJSONParser
from portal.api.v1 import KeyScope
from portal.auth import acting_user
from portal.errors import PlatformError
from training.services import jobs
from training.v1 import JOB

EXPORT_FIELDS = ("quantize", "heldout_file")

EXPORT = inline_serializer(
    "FineTuningExportCreate",
    {
        "quantize": serializers.ChoiceField(
            choices=list(jobs.QUANTIZE_CHOICES),
            required=False,
            allow_null=True,
            help_text="'int8' (the default: torchao int8 dynamic quantisation) or null for "
            "the merged weights alone.",
        ),
        "heldout_file": serializers.CharField(
            required=False,
            allow_null=True,
            help_text="Chat rows ('file-…' or a dataset 'owner/name@N') scored before and "
            "after, for the card's quality check.",
        ),
    },
)


def export_arguments(body: Any) -> dict[str, Any]:
    """``quantize`` and ``heldout_file`` from a JSON object body (unknown keys are a 400)."""
    if body is None or body == "":
        body = {}
    if not isinstance(body, dict):
        raise PlatformError("The request body must be a JSON object.")
    unknown = set(body) - set(EXPORT_FIELDS)
    if unknown:
        name = sorted(unknown)[0][:40]
        raise PlatformError(f"Unrecognized request argument supplied: {name}", param=name)
    heldout = body.get("heldout_file")
    if heldout is not None and not isinstance(heldout, str):
        raise PlatformError("'heldout_file' must be a string or null.", param="heldout_file")
    quantize = body.get("quantize", "int8")
    if quantize is not None and not isinstance(quantize, str):
        raise PlatformError("'quantize' must be a string or null.", param="quantize")
    return {"quantize": quantize, "heldout_file": heldout or None}


class ExportsView(APIView):
    """Exports of one of your fine-tunes."""

    permission_classes = [IsAuthenticated, KeyScope]
    scope = "fine_tuning"
    parser_classes = [SafeJSONParser]

    @extend_schema(
        operation_id="createFineTuningExport",
        tags=["fine_tuning"],
        request=EXPORT,
        parameters=[OpenApiParameter("job_id", str, OpenApiParameter.PATH)],
        responses={200: JOB},
    )
    def post(self, request: Request, job_id: str) -> Response:
        """Export a succeeded LoRA fine-tune: merged into its base and int8-quantised (or
        not), as a new job (``task`` "export") whose result is a new version of the
        fine-tune's model, with sizes and held-out losses on its card."""
        job = jobs.create_export(acting_user(request), job_id, **export_arguments(request.data))
        return Response(jobs.job_object(job))
