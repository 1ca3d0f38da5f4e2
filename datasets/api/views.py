"""The dataset hub's REST API: repos, versions and their files, uploads, jobs.
Views check (through :class:`~datasets.api.base.DatasetViewSet`), call a service, and
serialize; the viewer's endpoints are in :mod:`datasets.api.viewer`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q, QuerySet
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from datasets.api import serializers as s
from datasets.api.base import DatasetViewSet
from datasets.api.uploads import guard_request, local_copies
from datasets.models import DatasetJob, DatasetRepo, DatasetVersion
from datasets.services import jobs, lineage, repos, versions
from portal.auth import acting_user
from portal.errors import NotFound
from portal.jobs import request_cancel
from portal.models import Organization

PRESIGNED_EXPIRES_S = 3600
REPO_PATH = [
    OpenApiParameter(
        "namespace",
        str,
        OpenApiParameter.PATH,
        description="Owner's namespace",
        examples=[OpenApiExample("A user", value="olivia")],
    ),
    OpenApiParameter(
        "name",
        str,
        OpenApiParameter.PATH,
        description="Dataset name",
        examples=[OpenApiExample("A dataset", value="chat")],
    ),
]
VERSION_PATH = [
    *REPO_PATH,
    OpenApiParameter(
        "number",
        int,
        OpenApiParameter.PATH,
        description="Version number",
        examples=[OpenApiExample("The first version", value=1)],
    ),
]


def owner_named(user: Any, namespace: str | None) -> Any:
    """The user or organisation called ``namespace`` (the user when not given)."""
    if not namespace or namespace == user.get_username():
        return user
    owner: Any = Organization.objects.filter(name=namespace).first()
    owner = owner or get_user_model().objects.filter(username=namespace).first()
    if owner is None:
        raise NotFound(f"No user or organisation '{namespace}'.", param="owner")
    return owner


@extend_schema_view(
    list=extend_schema(parameters=[s.RepoQuerySerializer], responses=s.DatasetRepoSerializer),
    create=extend_schema(request=s.RepoCreateSerializer, responses={201: s.DatasetRepoSerializer}),
    retrieve=extend_schema(parameters=REPO_PATH, responses=s.DatasetRepoSerializer),
    partial_update=extend_schema(
        parameters=REPO_PATH, request=s.RepoUpdateSerializer, responses=s.DatasetRepoSerializer
    ),
    destroy=extend_schema(parameters=REPO_PATH, responses={204: None}),
)
class DatasetRepoViewSet(DatasetViewSet):
    """Dataset repos you may see; a repo is ``/api/datasets/{namespace}/{name}/``."""

    serializer_class = s.DatasetRepoSerializer
    queryset = DatasetRepo.objects.none()  # for the schema; DatasetViewSet scopes every read
    write_actions = frozenset({"partial_update", "destroy", "uploads"})

    def list(self, request: Request) -> Response:
        query = s.RepoQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = self.paginate_queryset(self.filtered(self.listed_repos(), **query.validated_data))
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @staticmethod
    def filtered(queryset: QuerySet[DatasetRepo], **given: Any) -> QuerySet[DatasetRepo]:
        if given.get("search"):
            text = given["search"]
            queryset = queryset.filter(Q(name__icontains=text) | Q(description__icontains=text))
        if given.get("task_categories"):
            queryset = queryset.filter(task_categories__contains=[given["task_categories"]])
        if given.get("language"):
            queryset = queryset.filter(languages__contains=[given["language"]])
        if given.get("license"):
            queryset = queryset.filter(license__iexact=given["license"])
        if given.get("owner"):
            queryset = queryset.filter(namespace=given["owner"])
        sort = s.SORTS.get(given.get("sort") or "", "namespace")
        return queryset.order_by(sort, "namespace", "name")

    def create(self, request: Request) -> Response:
        data = s.RepoCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = dict(data.validated_data)
        user = acting_user(request)
        repo = repos.create_repo(user, owner_named(user, given.pop("owner", None)), **given)
        self.kwargs.update(namespace=repo.namespace, name=repo.name)
        return Response(self.get_serializer(self.get_repo()).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request: Request, namespace: str, name: str) -> Response:
        return Response(self.get_serializer(self.get_repo()).data)

    def partial_update(self, request: Request, namespace: str, name: str) -> Response:
        repo = self.get_repo()
        data = s.RepoUpdateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        repos.update_repo(repo, **data.validated_data)
        return Response(self.get_serializer(self.get_repo()).data)

    def destroy(self, request: Request, namespace: str, name: str) -> Response:
        repos.delete_repo(self.get_repo())
        return Response(status=status.HTTP_204_NO_CONTENT)

    # Both methods answer 200 with the repo (a DELETE would otherwise be documented as 204).
    @extend_schema(parameters=REPO_PATH, request=None, responses={200: s.DatasetRepoSerializer})
    @action(detail=False, methods=["post", "delete"], url_path="star")
    def star(self, request: Request, namespace: str, name: str) -> Response:
        """POST stars the dataset, DELETE unstars it; both idempotent."""
        repo = self.get_repo()
        repos.set_star(acting_user(request), repo, request.method == "POST")
        return Response(self.get_serializer(self.get_repo()).data)

    @extend_schema(parameters=REPO_PATH, responses=s.DatasetJobSerializer(many=True))
    @action(detail=False, methods=["get"])
    def jobs(self, request: Request, namespace: str, name: str) -> Response:
        """The repo's jobs, newest first."""
        page = self.paginate_queryset(self.readable_jobs(self.get_repo()).order_by("-pk"))
        return self.get_paginated_response(s.DatasetJobSerializer(page, many=True).data)

    @extend_schema(
        parameters=REPO_PATH,
        request=s.UploadStartSerializer,
        responses={201: s.UploadPlanSerializer},
    )
    @action(detail=False, methods=["post"])
    def uploads(self, request: Request, namespace: str, name: str) -> Response:
        """Open a presigned multipart upload: PUT each part to its URL, keep the ETags,
        then POST them to ``…/versions/{number}/complete/``."""
        repo = self.get_repo()
        data = s.UploadStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        files = [(f["path"], f["size"]) for f in data.validated_data["files"]]
        version, plan = versions.start_upload(
            repo, acting_user(request), files, data.validated_data.get("message", "")
        )
        body = {"version": version.number, "files": plan}
        return Response(s.UploadPlanSerializer(body).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    list=extend_schema(parameters=REPO_PATH, responses=s.VersionSerializer(many=True)),
    create=extend_schema(
        parameters=REPO_PATH,
        request={"multipart/form-data": s.VersionUploadSerializer},
        responses={201: s.VersionDetailSerializer},
    ),
    retrieve=extend_schema(parameters=VERSION_PATH, responses=s.VersionDetailSerializer),
    destroy=extend_schema(parameters=VERSION_PATH, responses={204: None}),
)
class DatasetVersionViewSet(DatasetViewSet):
    """A repo's immutable versions, their files, downloads, lineage and the jobs to
    start on one."""

    serializer_class = s.VersionDetailSerializer
    queryset = DatasetVersion.objects.none()
    write_actions = frozenset({"create", "destroy", "complete", "process", "statistics"})

    def list(self, request: Request, namespace: str, name: str) -> Response:
        repo = self.get_repo()
        queryset = repo.versions.select_related("parent").order_by("-number")
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(s.VersionSerializer(page, many=True).data)

    def create(self, request: Request, namespace: str, name: str) -> Response:
        """Upload small files as a new version (multipart form); its ingest is queued."""
        repo = self.get_repo()
        guard_request(request._request)
        data = s.VersionUploadSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with local_copies(data.validated_data["files"]) as files:
            version = versions.add_local_files(
                repo, acting_user(request), files, message=data.validated_data.get("message", "")
            )
        return Response(self.version_body(repo, version.number), status=status.HTTP_201_CREATED)

    def version_body(self, repo: DatasetRepo, number: int) -> Any:
        self.kwargs["number"] = str(number)
        return s.VersionDetailSerializer(self.get_version(repo)).data

    def retrieve(self, request: Request, namespace: str, name: str, number: str) -> Response:
        return Response(s.VersionDetailSerializer(self.get_version()).data)

    def destroy(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Delete a version; 409 ``dataset_in_use`` while a job reads it."""
        versions.delete_version(self.get_version())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=VERSION_PATH,
        request=s.UploadCompleteSerializer,
        responses=s.VersionDetailSerializer,
    )
    @action(detail=False, methods=["post"])
    def complete(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Finish a presigned multipart upload with each part's ETag; queues the ingest."""
        version = self.get_version()
        data = s.UploadCompleteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        versions.complete_upload(version, acting_user(request), data.validated_data["parts"])
        return Response(self.version_body(version.repo, version.number))

    @extend_schema(
        parameters=[
            *VERSION_PATH,
            OpenApiParameter(
                "path",
                str,
                OpenApiParameter.PATH,
                description="File name",
                examples=[OpenApiExample("A file", value="train.jsonl")],
            ),
        ],
        responses=s.DownloadSerializer,
    )
    @action(detail=False, methods=["get"])
    def download(
        self, request: Request, namespace: str, name: str, number: str, path: str
    ) -> Response:
        """A presigned URL of one file of the version."""
        url = versions.download_url(self.get_version(), path)
        return Response({"url": url, "expires_in": PRESIGNED_EXPIRES_S})

    @extend_schema(parameters=VERSION_PATH, responses=s.LineageSerializer)
    @action(detail=False, methods=["get"])
    def lineage(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Where the version came from, what was made from it, and which jobs used it."""
        readable = DatasetVersion.objects.filter(repo__in=self.repos("read"))
        return Response(lineage.lineage(self.get_version(), readable))

    @extend_schema(
        parameters=VERSION_PATH,
        request=s.ProcessSerializer,
        responses={202: s.DatasetJobSerializer},
    )
    @action(detail=False, methods=["post"])
    def process(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Run processing steps on a ready version; the job makes a new version."""
        version = self.get_version()
        data = s.ProcessSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        job = jobs.start_processing(version, acting_user(request), data.validated_data["steps"])
        return Response(s.DatasetJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=VERSION_PATH,
        request=s.StatisticsRequestSerializer,
        responses={202: s.DatasetJobSerializer},
    )
    @action(detail=False, methods=["post"])
    def statistics(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Compute the version's statistics again, counting tokens with a model's tokenizer."""
        version = self.get_version()
        data = s.StatisticsRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tokenizer = data.validated_data.get("tokenizer", "")
        job = jobs.start_statistics(version, acting_user(request), tokenizer)
        return Response(s.DatasetJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


JOB_PATH = [OpenApiParameter("job_id", int, OpenApiParameter.PATH, description="Job id")]


class DatasetJobViewSet(DatasetViewSet):
    """A dataset job (ingest, statistics, processing): status, events, cancel."""

    serializer_class = s.DatasetJobSerializer
    queryset = DatasetJob.objects.none()
    write_actions = frozenset({"cancel"})

    @extend_schema(parameters=JOB_PATH, responses=s.DatasetJobSerializer)
    def retrieve(self, request: Request, job_id: str) -> Response:
        return Response(self.get_serializer(self.get_job()).data)

    @extend_schema(
        parameters=[*JOB_PATH, s.JobEventQuerySerializer],
        responses=s.JobEventSerializer(many=True),
    )
    @action(detail=False, methods=["get"])
    def events(self, request: Request, job_id: str) -> Response:
        """The job's log, oldest first; ``after`` an event id to read only newer ones."""
        job = self.get_job()
        query = s.JobEventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        events = job.events.filter(pk__gt=query.validated_data.get("after", 0)).order_by("pk")
        page = self.paginate_queryset(events)
        context = self.get_serializer_context()
        return self.get_paginated_response(
            s.JobEventSerializer(page, many=True, context=context).data
        )

    @extend_schema(parameters=JOB_PATH, request=None, responses=s.DatasetJobSerializer)
    @action(detail=False, methods=["post"])
    def cancel(self, request: Request, job_id: str) -> Response:
        """Cancel a queued job now, or ask a running one to stop; 409 once it finished."""
        job = self.readable_jobs().get(pk=request_cancel(self.get_job()).pk)
        jobs.release_finished_uses(job)
        return Response(self.get_serializer(job).data)
