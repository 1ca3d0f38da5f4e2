"""The governance pages, mounted at ``/governance/`` by ``portal/urls.py``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from governance import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="governance-home"),
    path("review/", views.queue, name="governance-queue"),
    path("review/<str:item_id>/", views.item_detail, name="governance-item"),
    path("review/<str:item_id>/assign/", views.item_assign, name="governance-item-assign"),
    path("review/<str:item_id>/decide/", views.item_decide, name="governance-item-decide"),
    path("appeals/<str:appeal_id>/decide/", views.appeal_decide, name="governance-appeal-decide"),
    path("policies/", views.policy_list, name="governance-policies"),
    path("policies/new/", views.policy_new, name="governance-policy-new"),
    path("policies/<int:pk>/", views.policy_edit, name="governance-policy"),
    path("policies/<int:pk>/delete/", views.policy_delete, name="governance-policy-delete"),
    path("lists/", views.list_index, name="governance-lists"),
    path("lists/<int:pk>/", views.list_detail, name="governance-list"),
    path("lists/<int:pk>/items/", views.list_items, name="governance-list-items"),
    path("lists/<int:pk>/import/", views.list_import, name="governance-list-import"),
    path("audit/", views.audit_log, name="governance-audit"),
    path("suspensions/", views.suspension_list, name="governance-suspensions"),
    path("suspensions/<int:pk>/lift/", views.suspension_lift, name="governance-suspension-lift"),
    path("compliance/", views.compliance_list, name="governance-compliance"),
    path("compliance/<str:report_id>/", views.compliance_detail, name="governance-report"),
    path("verify/", views.verify, name="governance-verify"),
]
