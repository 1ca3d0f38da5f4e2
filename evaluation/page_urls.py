"""The evaluation pages, mounted at ``/evaluation/`` by ``portal/urls.py``."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from evaluation import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.home, name="evaluation-home"),
    path("runs/new/", views.run_new, name="evaluation-run-new"),
    path("runs/<str:run_id>/", views.run_detail, name="evaluation-run"),
    path("runs/<str:run_id>/data.json", views.run_data, name="evaluation-run-data"),
    path("runs/<str:run_id>/cancel/", views.run_cancel, name="evaluation-run-cancel"),
    path("tasks/<str:namespace>/<str:name>/", views.task_detail, name="evaluation-task"),
    path("suites/<str:namespace>/<str:name>/", views.suite_detail, name="evaluation-suite"),
    path(
        "leaderboards/<str:namespace>/<str:name>/",
        views.leaderboard,
        name="evaluation-leaderboard",
    ),
    path(
        "leaderboards/<str:namespace>/<str:name>/submit/",
        views.leaderboard_submit,
        name="evaluation-leaderboard-submit",
    ),
    path("compare/", views.compare, name="evaluation-compare"),
    path("arenas/<str:namespace>/<str:name>/", views.arena, name="evaluation-arena"),
    path(
        "arenas/<str:namespace>/<str:name>/battles/",
        views.battle_new,
        name="evaluation-battle-new",
    ),
    path("battles/<str:battle_id>/vote/", views.battle_vote, name="evaluation-battle-vote"),
]
