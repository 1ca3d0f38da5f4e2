"""The dataset pages, mounted at ``/datasets/`` by ``portal/urls.py``."""

from __future__ import annotations

from django.urls import path

from datasets import views

urlpatterns = [
    path("", views.hub, name="dataset-hub"),
    path("new/", views.new_dataset, name="dataset-new"),
    path("<str:namespace>/<str:name>/", views.dataset_detail, name="dataset-page"),
    path("<str:namespace>/<str:name>/star/", views.star, name="dataset-page-star"),
    path(
        "<str:namespace>/<str:name>/download/<int:number>/<path:path>",
        views.download,
        name="dataset-page-download",
    ),
]
