"""Pages and plain endpoints of metering: the usage page and ``/metrics``."""

from __future__ import annotations

import hmac
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.db.models.functions import TruncDay, TruncHour
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST

from compute.metering.metrics import exposition
from compute.metering.models import UsageHourly
from portal.auth import bearer_token

PERIODS = {"day": (TruncDay, 30, "%Y-%m-%d"), "hour": (TruncHour, 2, "%m-%d %H:00")}


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition; needs ``Authorization: Bearer METRICS_TOKEN``. Without a
    configured token the endpoint does not exist (404)."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404
    supplied = bearer_token(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(supplied.encode(), token.encode()):
        response = HttpResponse("metrics token required\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    """Tokens and cost per model by day (last 30 days) or hour (last 2 days)."""
    group = request.GET.get("group", "day")
    if group not in PERIODS:
        group = "day"
    trunc, days, label_format = PERIODS[group]
    since = timezone.now() - timedelta(days=days)
    buckets = (
        UsageHourly.objects.restrict(request.user)
        .filter(hour__gte=since)
        .annotate(period=trunc("hour"))
        .values("period", "model")
        .annotate(
            requests=Sum("requests"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost_cny=Sum("cost_cny"),
        )
        .order_by("period", "model")
    )
    rows: list[dict[str, Any]] = [dict(row) for row in buckets]
    for row in rows:
        row["label"] = timezone.localtime(row["period"]).strftime(label_format)
    context = {"group": group, "rows": rows, "chart": chart_data(rows), "days": days}
    return render(request, "compute/usage.html", context)


def chart_data(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Chart.js data: one label per period, one series per model (tokens and cost)."""
    labels = sorted({row["label"] for row in rows})
    tokens: dict[str, dict[str, int]] = defaultdict(dict)
    cost: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for row in rows:
        tokens[row["model"]][row["label"]] = row["prompt_tokens"] + row["completion_tokens"]
        cost[row["model"]][row["label"]] = row["cost_cny"]

    def series(values: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"label": model, "data": [float(by_label.get(label, 0)) for label in labels]}
            for model, by_label in sorted(values.items())
        ]

    return {"labels": labels, "tokens": series(tokens), "cost": series(cost)}
