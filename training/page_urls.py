"""The fine-tuning pages, mounted at ``/fine-tuning/`` by ``portal/urls.py``."""

from __future__ import annotations

from django.urls import path

from training import views

urlpatterns = [
    path("", views.job_list, name="fine-tuning-list"),
    path("new/", views.job_new, name="fine-tuning-new"),
    path("<str:job_id>/", views.job_detail, name="fine-tuning-job"),
    path("<str:job_id>/data.json", views.job_data, name="fine-tuning-job-data"),
    path("<str:job_id>/cancel/", views.job_cancel, name="fine-tuning-job-cancel"),
    path("<str:job_id>/export/", views.job_export, name="fine-tuning-job-export"),
]
