"""The dataset pages: the hub (search, filters, sort), a dataset's page (card, versions,
validation report, statistics, viewer, lineage, downloads, upload) and creating one.

The pages read through the tenancy filter (``DatasetRepo.objects.restrict``): a hidden
dataset is a 404. The viewer, uploads and job polling are the page's script calling
``/api/datasets/…`` with the browser session (CSRF token in ``X-CSRFToken``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_POST
from markdown_it import MarkdownIt

from datasets.forms import NewDatasetForm
from datasets.models import DatasetRepo, DatasetStar, DatasetVersion, Origin, VersionState
from datasets.services import lineage as lineage_service
from datasets.services import repos, versions
from portal.errors import NotFound
from portal.views import not_found

PAGE_SIZE = 20
FACET_SIZE = 12
SORTS = {"stars": "-star_count", "downloads": "-download_count", "updated": "-updated_at"}
SAFE_SCHEMES = ("http://", "https://", "#")
# JSON list fields offered as hub filters, and their database columns.
LIST_FACETS = {"task_categories": "task_categories", "languages": "languages"}


def _markdown() -> MarkdownIt:
    # Raw HTML is escaped ("js-default" turns it off) and only http(s) links and
    # in-page anchors survive: a card is text from any user, shown to every visitor.
    md = MarkdownIt("js-default", {"linkify": False}).enable("table")
    md.validateLink = _safe_link  # type: ignore[method-assign]
    return md


def _safe_link(url: str) -> bool:
    return url.strip().lower().startswith(SAFE_SCHEMES)


_MD = _markdown()


def render_card(text: str) -> SafeString:
    """The card's Markdown as HTML without raw HTML, scripts or non-http(s) links."""
    return mark_safe(_MD.render(text))  # noqa: S308 - markdown-it escapes raw HTML


def _visible(request: HttpRequest) -> QuerySet[DatasetRepo]:
    return DatasetRepo.objects.restrict(request.user).filter(origin=Origin.HUB)


def _search(repos_qs: QuerySet[DatasetRepo], params: Any) -> QuerySet[DatasetRepo]:
    query = params.get("q", "").strip()
    if query:
        repos_qs = repos_qs.filter(
            Q(name__icontains=query)
            | Q(namespace__icontains=query)
            | Q(description__icontains=query)
            | Q(tags__contains=[query])
        )
    if task := params.get("task"):
        repos_qs = repos_qs.filter(task_categories__contains=[task])
    if language := params.get("language"):
        repos_qs = repos_qs.filter(languages__contains=[language])
    if license_ := params.get("license"):
        repos_qs = repos_qs.filter(license=license_)
    return repos_qs


def _list_facet(repos_qs: QuerySet[DatasetRepo], field: str) -> list[tuple[str, int]]:
    """The most common items of the JSON list column ``field`` among ``repos_qs``,
    counted by PostgreSQL (the hub may hold many thousands of datasets)."""
    table = DatasetRepo._meta.db_table
    column = LIST_FACETS[field]
    ids, params = repos_qs.values("pk").query.sql_with_params()
    sql = (
        f'SELECT item, count(*) AS n FROM "{table}" AS r, '  # noqa: S608 - names from the model
        f'jsonb_array_elements_text(r."{column}") AS item '
        f"WHERE r.id IN ({ids}) GROUP BY item ORDER BY n DESC, item LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, FACET_SIZE])
        return [(str(item), int(n)) for item, n in cursor.fetchall()]


def _facets(repos_qs: QuerySet[DatasetRepo]) -> dict[str, list[tuple[str, int]]]:
    """The most common task categories, languages and licenses among ``repos_qs``."""
    licenses = (
        repos_qs.exclude(license="")
        .values_list("license")
        .annotate(n=Count("pk"))
        .order_by("-n", "license")[:FACET_SIZE]
    )
    return {
        "task": _list_facet(repos_qs, "task_categories"),
        "language": _list_facet(repos_qs, "languages"),
        "license": [(name, n) for name, n in licenses],
    }


def hub(request: HttpRequest) -> HttpResponse:
    """Search the datasets the visitor may see; filter by task, language and license."""
    visible = _visible(request)
    sort = request.GET.get("sort", "updated")
    ordering = SORTS.get(sort, SORTS["updated"])
    found = _search(visible, request.GET).order_by(ordering, "namespace", "name")
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    params = request.GET.copy()
    params.pop("page", None)
    context = {
        "page": page,
        "facets": _facets(visible),
        "filters": {key: request.GET.get(key, "") for key in ("q", "task", "language", "license")},
        "sort": sort if sort in SORTS else "updated",
        "query_string": params.urlencode(),
    }
    return render(request, "datasets/hub.html", context)


def _repo(request: HttpRequest, namespace: str, name: str) -> DatasetRepo | None:
    return _visible(request).filter(namespace=namespace, name=name).first()


def _version(repo: DatasetRepo, wanted: str | None) -> DatasetVersion | None:
    """The version asked for by number, else the newest one."""
    chosen = repo.versions.all()
    if wanted and wanted.isascii() and wanted.isdigit():
        return chosen.filter(number=int(wanted)).first()
    return chosen.first()


def _problems(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per file: its report with the problem counts sorted, most frequent first."""
    listing = []
    for path, file_report in sorted(report.items()):
        counts = sorted(file_report.get("problem_counts", {}).items(), key=lambda kv: -kv[1])
        total = sum(count for _, count in counts)
        listing.append({"path": path, "report": file_report, "counts": counts, "total": total})
    return listing


def _charts(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """The histograms of every file, ready for the page's Chart.js script."""
    charts: list[dict[str, Any]] = []
    for path, file_stats in sorted(stats.get("files", {}).items()):
        for kind, histogram in sorted(file_stats.get("histograms", {}).items()):
            if histogram.get("hist"):
                charts.append(
                    {"id": f"hist-{len(charts)}", "path": path, "kind": kind, **histogram}
                )
    return charts


def _readable_versions(request: HttpRequest) -> QuerySet[DatasetVersion]:
    return DatasetVersion.objects.filter(repo__in=DatasetRepo.objects.restrict(request.user))


def _version_context(request: HttpRequest, version: DatasetVersion | None) -> dict[str, Any]:
    if version is None:
        return {"version": None}
    stats = version.stats or {}
    return {
        "version": version,
        "files": list(version.files.all()),
        "settled": version.state in VersionState.SETTLED,
        "problems": _problems(version.report or {}),
        "file_stats": sorted((stats.get("files") or {}).items()),
        "charts": _charts(stats),
        "lineage": lineage_service.lineage(version, _readable_versions(request)),
    }


@ensure_csrf_cookie
def dataset_detail(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """A dataset's page, at ``?version=N`` or its newest version. Hidden datasets are 404."""
    repo = _repo(request, namespace, name)
    if repo is None:
        return not_found(request)
    version = _version(repo, request.GET.get("version"))
    if version is None and request.GET.get("version"):
        return not_found(request)
    user = request.user
    context = {
        "repo": repo,
        "card_html": render_card(repo.card),
        "versions": repo.versions.all(),
        "may_write": DatasetRepo.objects.restrict(user, "write").filter(pk=repo.pk).exists(),
        "starred": user.is_authenticated
        and DatasetStar.objects.filter(user=user, repo=repo).exists(),
        **_version_context(request, version),
    }
    return render(request, "datasets/detail.html", context)


@login_required
@require_POST
def star(request: HttpRequest, namespace: str, name: str) -> HttpResponse:
    """Star (``starred=1``) or unstar the dataset, then back to its page."""
    repo = _repo(request, namespace, name)
    if repo is None:
        return not_found(request)
    repos.set_star(request.user, repo, request.POST.get("starred") == "1")
    return redirect("dataset-page", namespace=namespace, name=name)


def download(
    request: HttpRequest, namespace: str, name: str, number: int, path: str
) -> HttpResponse:
    """Redirect to a short-lived presigned URL of one file; counts a download."""
    repo = _repo(request, namespace, name)
    version = repo.versions.filter(number=number).first() if repo else None
    if version is None:
        return not_found(request)
    try:
        url = versions.download_url(version, path)
    except NotFound:
        return not_found(request)
    return HttpResponseRedirect(url)


@login_required
def new_dataset(request: HttpRequest) -> HttpResponse:
    """Create a dataset; its page then offers the upload."""
    form = NewDatasetForm(request.user, request.POST or None)
    if request.method == "POST" and form.is_valid():
        repo = form.save()
        if repo is not None:
            return redirect("dataset-page", namespace=repo.namespace, name=repo.name)
    return render(request, "datasets/new.html", {"form": form})
