"""The one place the dataset API scopes what a principal may see and change.

Every repo, version, file, viewer page, job and presigned URL is reached through
:meth:`DatasetViewSet.repos`, which is ``DatasetRepo.objects.restrict(user, action)``:
anything in a repo the user may not read is a 404; a write to a repo they may read but
not write (a teammate on an organisation's dataset) is a 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, Max, OuterRef, QuerySet
from rest_framework import permissions, viewsets

from datasets.api.serializers import MAX_INT
from datasets.models import DatasetJob, DatasetRepo, DatasetStar, DatasetVersion
from portal.errors import NotFound, PermissionDenied
from portal.models.ownership import Action


class DatasetViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """Base of the dataset viewsets: tenancy, and the repo/version/job of the URL."""

    permission_classes = [permissions.IsAuthenticatedOrReadOnly]
    # Actions that change a repo or start work on it: they need write permission.
    write_actions: frozenset[str] = frozenset()

    def repos(self, action: Action = "read") -> QuerySet[DatasetRepo]:
        """The repos the requesting user may ``read`` or ``write``."""
        return DatasetRepo.objects.restrict(self.request.user, action)

    def listed_repos(self) -> QuerySet[DatasetRepo]:
        """Readable repos with what lists show: the latest version and the user's star."""
        user = self.request.user
        starred = DatasetStar.objects.filter(repo=OuterRef("pk"), user_id=user.pk or 0)
        return self.repos("read").annotate(
            latest_number=Max("versions__number"), is_starred=Exists(starred)
        )

    def get_repo(self) -> DatasetRepo:
        """The repo named by the URL: 404 unless readable, 403 for a write it may not do."""
        repo = (
            self.listed_repos()
            .filter(namespace=self.kwargs["namespace"], name=self.kwargs["name"])
            .first()
        )
        if repo is None:
            raise NotFound("No such dataset.", param="name")
        if self.action in self.write_actions:
            self.check_writable(repo)
        return repo

    def check_writable(self, repo: DatasetRepo) -> None:
        if not self.repos("write").filter(pk=repo.pk).exists():
            raise PermissionDenied("You may read this dataset but not change it.")

    def get_version(self, repo: DatasetRepo | None = None) -> DatasetVersion:
        """The version ``number`` of the URL's repo; 404 when there is none."""
        repo = repo or self.get_repo()
        number = int(self.kwargs["number"])
        version = None
        if number <= MAX_INT:
            version = repo.versions.select_related("repo", "parent").filter(number=number).first()
        if version is None:
            raise NotFound(f"{repo.full_name} has no version {number}.", param="number")
        return version

    def get_job(self) -> DatasetJob:
        """The job ``id`` of the URL, in a repo the user may read (write, for writes)."""
        job_id = int(self.kwargs["job_id"])
        job = None
        if job_id <= 2**62:
            job = self.readable_jobs().filter(pk=job_id).first()
        if job is None:
            raise NotFound("No such job.", param="id")
        if self.action in self.write_actions:
            self.check_writable(job.repo)
        return job

    def readable_jobs(self, repo: DatasetRepo | None = None) -> QuerySet[DatasetJob]:
        """Jobs of readable repos (of ``repo`` when given)."""
        queryset = DatasetJob.objects.select_related("repo", "version", "output")
        if repo is not None:
            return queryset.filter(repo=repo)
        return queryset.filter(repo__in=self.repos("read"))

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        context["staff"] = bool(getattr(self.request.user, "is_staff", False))
        return context
