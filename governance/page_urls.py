"""The governance pages, mounted at ``/governance/`` by ``portal/urls.py``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from governance import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="gv-home"),
    path("review/", views.queue, name="gv-queue"),
    path("review/<str:item_id>/", views.item_detail, name="gv-item"),
    path("review/<str:item_id>/assign/", views.item_assign, name="gv-item-assign"),
    path("review/<str:item_id>/decide/", views.item_decide, name="gv-item-decide"),
    path("appeals/<str:appeal_id>/decide/", views.appeal_decide, name="gv-appeal-decide"),
    path("policies/", views.policy_list, name="gv-policies"),
    path("policies/new/", views.policy_new, name="gv-policy-new"),
    path("policies/<int:pk>/", views.policy_edit, name="gv-policy"),
    path("policies/<int:pk>/delete/", views.policy_delete, name="gv-policy-delete"),
    path("lists/", views.list_index, name="gv-lists"),
    path("lists/<int:pk>/", views.list_detail, name="gv-list"),
    path("lists/<int:pk>/items/", views.list_items, name="gv-list-items"),
    path("lists/<int:pk>/import/", views.list_import, name="gv-list-import"),
    path("audit/", views.audit_log, name="gv-audit"),
    path("suspensions/", views.suspension_list, name="gv-suspensions"),
    path("suspensions/<int:pk>/lift/", views.suspension_lift, name="gv-suspension-lift"),
    path("compliance/", views.compliance_list, name="gv-compliance"),
    path("compliance/<str:report_id>/", views.compliance_detail, name="gv-report"),
    path("verify/", views.verify, name="gv-verify"),
]
