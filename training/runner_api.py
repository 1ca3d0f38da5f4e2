"""The runner-facing API (``/api/training/runner/…``): a node's runner reports events,
checkpoints and its result with its run token (``Authorization: Bearer mrun-…``), never a
user's key. Errors are in the ``/api`` shape; 401 means the token is bad or superseded
(the runner stops at once), 409 that the job has ended.

The work is in :mod:`training.services.runner`; these views authenticate, call and answer.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.api.parsers import SafeJSONParser
from portal.auth import bearer_token
from training.services import runner


class RunnerView(APIView):
    """Authenticated by the run token in the view (not as a user): no session, no CSRF."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    renderer_classes = [JSONRenderer]
    parser_classes = [SafeJSONParser]

    def run(self, request: Request) -> runner.Run:
        return runner.authenticate(bearer_token(request.META.get("HTTP_AUTHORIZATION")))


@extend_schema(exclude=True)
class EventsView(RunnerView):
    def post(self, request: Request) -> Response:
        return Response(runner.report_events(self.run(request), request.data))


@extend_schema(exclude=True)
class CheckpointsView(RunnerView):
    def post(self, request: Request) -> Response:
        return Response(runner.start_checkpoint(self.run(request), request.data))


@extend_schema(exclude=True)
class CheckpointCompleteView(RunnerView):
    def post(self, request: Request, step: int) -> Response:
        return Response(runner.complete_checkpoint(self.run(request), step))


@extend_schema(exclude=True)
class ResultView(RunnerView):
    def post(self, request: Request) -> Response:
        return Response(runner.start_result(self.run(request), request.data))


@extend_schema(exclude=True)
class ResultCompleteView(RunnerView):
    def post(self, request: Request) -> Response:
        return Response(runner.complete_result(self.run(request)))
