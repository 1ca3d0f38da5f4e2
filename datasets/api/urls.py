"""Routes of ``/api/datasets/``. Jobs come first: ``jobs/{id}/`` would otherwise read as
the dataset ``{id}`` of a namespace called ``jobs``."""

from __future__ import annotations

from django.urls import URLPattern, path, re_path

from datasets.api.viewer import DatasetViewerViewSet
from datasets.api.views import DatasetJobViewSet, DatasetRepoViewSet, DatasetVersionViewSet

REPO = r"^(?P<namespace>[^/]+)/(?P<name>[^/]+)/"
VERSION = REPO + r"versions/(?P<number>[0-9]+)/"
JOB = r"^jobs/(?P<job_id>[0-9]+)/"

repos = DatasetRepoViewSet.as_view
versions = DatasetVersionViewSet.as_view
viewer = DatasetViewerViewSet.as_view
jobs = DatasetJobViewSet.as_view

urlpatterns: list[URLPattern] = [
    re_path(JOB + "$", jobs({"get": "retrieve"}), name="dataset-job"),
    re_path(JOB + "events/$", jobs({"get": "events"}), name="dataset-job-events"),
    re_path(JOB + "cancel/$", jobs({"post": "cancel"}), name="dataset-job-cancel"),
    path("", repos({"get": "list", "post": "create"}), name="dataset-list"),
    re_path(
        REPO + "$",
        repos({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
        name="dataset-detail",
    ),
    re_path(REPO + "star/$", repos({"post": "star", "delete": "star"}), name="dataset-star"),
    re_path(REPO + "jobs/$", repos({"get": "jobs"}), name="dataset-jobs"),
    re_path(REPO + "uploads/$", repos({"post": "uploads"}), name="dataset-uploads"),
    re_path(
        REPO + "versions/$",
        versions({"get": "list", "post": "create"}),
        name="dataset-versions",
    ),
    re_path(
        VERSION + "$",
        versions({"get": "retrieve", "delete": "destroy"}),
        name="dataset-version",
    ),
    re_path(VERSION + "complete/$", versions({"post": "complete"}), name="dataset-complete"),
    re_path(
        VERSION + r"files/(?P<path>[^/]+)/download/$",
        versions({"get": "download"}),
        name="dataset-download",
    ),
    re_path(VERSION + "lineage/$", versions({"get": "lineage"}), name="dataset-lineage"),
    re_path(VERSION + "process/$", versions({"post": "process"}), name="dataset-process"),
    re_path(VERSION + "statistics/$", versions({"post": "statistics"}), name="dataset-statistics"),
    re_path(VERSION + "viewer/splits/$", viewer({"get": "splits"}), name="dataset-splits"),
    re_path(VERSION + "viewer/rows/$", viewer({"get": "rows"}), name="dataset-rows"),
    re_path(VERSION + "viewer/search/$", viewer({"get": "search"}), name="dataset-search"),
    re_path(VERSION + "viewer/filter/$", viewer({"get": "filter_rows"}), name="dataset-filter"),
    re_path(
        VERSION + "viewer/statistics/$",
        viewer({"get": "column_statistics"}),
        name="dataset-column-statistics",
    ),
]
