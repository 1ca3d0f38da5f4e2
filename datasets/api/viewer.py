"""The dataset viewer over HTTP: splits, rows, search, filter and statistics of one file
of a version, answered by :mod:`datasets.viewer` from the file's Parquet copy (fetched
from the object store once into a process-wide local cache)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from datasets.api import serializers as s
from datasets.api.base import DatasetViewSet
from datasets.api.views import VERSION_PATH
from datasets.models import DatasetFile, DatasetVersion, VersionState
from datasets.services.versions import BUCKET
from portal.errors import Conflict, NotFound, PlatformError
from portal.storage import store

if TYPE_CHECKING:
    from datasets.viewer import ParquetCache

logger = logging.getLogger(__name__)


@functools.cache
def parquet_cache() -> ParquetCache:
    """The process's local cache of viewer copies (immutable: keyed by version and file)."""
    from datasets.viewer import ParquetCache

    root = Path(settings.DATASET_VIEWER_CACHE_DIR)
    return ParquetCache(root, settings.DATASET_VIEWER_CACHE_BYTES)


def pick_file(version: DatasetVersion, path: str | None, split: str | None) -> DatasetFile:
    """The file named ``path``, else the first of ``split``, else the version's first."""
    files = version.files.all()
    if path:
        files = files.filter(path=path)
    elif split:
        files = files.filter(split=split)
    record = files.order_by("path").first()
    if record is None:
        param = "file" if path else "split"
        raise NotFound(f"{version} has no such {param}.", param=param)
    return record


def local_copy(version: DatasetVersion, record: DatasetFile) -> Path:
    """The local path of ``record``'s Parquet copy. Raises Conflict while the version is
    still uploading or ingesting, or when no row of the file could be read."""
    if version.state not in VersionState.SETTLED:
        raise Conflict(f"{version} is still being {version.state}.", code="not_ready")
    key = record.parquet_key
    if not key:
        raise Conflict(f"{record.path} has no rows to show.", code="not_viewable", param="file")
    # Object keys are made of database ids, which a fresh database hands out again: the
    # content hash keeps a cache that outlived its database from answering stale rows.
    cache_key = f"{record.sha256}/{key}"
    local = parquet_cache().path(cache_key, lambda tmp: store().download(BUCKET, key, tmp))
    warm_search_index(local)
    return local


_warming: set[Path] = set()
_warming_lock = threading.Lock()


def warm_search_index(local: Path) -> None:
    """Start building the search index of a cached copy in the background on its first
    use, so the first search (which would otherwise build it: ~10 s per million rows)
    finds it ready or waits only for the rest of the build."""
    from datasets.viewer import build_search_index, index_path

    with _warming_lock:
        if local in _warming or index_path(local).exists():
            return
        _warming.add(local)

    def build() -> None:
        try:
            build_search_index(local)
            parquet_cache().evict()  # the index grew the cache
        except Exception:  # the next search builds it again and reports what fails
            logger.exception("building the search index of %s failed", local)
        finally:
            with _warming_lock:
                _warming.discard(local)

    threading.Thread(target=build, name="viewer-index", daemon=True).start()


def viewer_call(call: Callable[[], dict[str, Any]]) -> Response:
    """Run a viewer query; a bad query (ViewerError) is a 400 naming its parameter."""
    from datasets.viewer import ViewerError

    try:
        return Response(call())
    except ViewerError as exc:
        message = getattr(exc, "message", None) or str(exc) or exc.code
        raise PlatformError(message, code=exc.code, param=exc.param) from exc


class DatasetViewerViewSet(DatasetViewSet):
    """Browse a version's rows: what Hugging Face's dataset viewer answers."""

    serializer_class = s.ViewerPageSerializer

    def opened(self, query_class: type[s.Serializer]) -> tuple[DatasetFile, Path, Any]:
        """The file the query names, its local Parquet copy, and the validated query."""
        query = query_class(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        given = query.validated_data
        version = self.get_version()
        record = pick_file(version, given.get("file"), given.get("split"))
        return record, local_copy(version, record), given

    @extend_schema(parameters=VERSION_PATH, responses=s.SplitsSerializer)
    @action(detail=False, methods=["get"])
    def splits(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Every file of the version with its split and row count."""
        version = self.get_version()
        splits = [
            {
                "dataset": version.repo.full_name,
                "config": "default",
                "split": f.split,
                "file": f.path,
                "num_rows": f.rows,
            }
            for f in version.files.order_by("path")
        ]
        return Response({"splits": splits})

    @extend_schema(parameters=[*VERSION_PATH, s.ViewerPageQuerySerializer])
    @action(detail=False, methods=["get"])
    def rows(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """``length`` rows from ``offset`` (at most 100)."""
        from datasets import viewer

        _, path, q = self.opened(s.ViewerPageQuerySerializer)
        return viewer_call(lambda: viewer.rows(path, q["offset"], q["length"]))

    @extend_schema(parameters=[*VERSION_PATH, s.ViewerSearchQuerySerializer])
    @action(detail=False, methods=["get"])
    def search(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Rows whose text contains ``query`` (case-insensitive; Chinese too)."""
        from datasets import viewer

        _, path, q = self.opened(s.ViewerSearchQuerySerializer)
        return viewer_call(lambda: viewer.search(path, q["query"], q["offset"], q["length"]))

    @extend_schema(parameters=[*VERSION_PATH, s.ViewerFilterQuerySerializer])
    @action(detail=False, methods=["get"], url_path="filter")
    def filter_rows(self, request: Request, namespace: str, name: str, number: str) -> Response:
        """Rows matching ``where`` (e.g. ``score >= 3 AND lang = 'zh'``), ordered by
        ``orderby`` (e.g. ``score DESC``)."""
        from datasets import viewer

        _, path, q = self.opened(s.ViewerFilterQuerySerializer)
        return viewer_call(
            lambda: viewer.filter(
                path, q.get("where", ""), q["offset"], q["length"], orderby=q.get("orderby") or None
            )
        )

    @extend_schema(
        parameters=[*VERSION_PATH, s.ViewerFileQuerySerializer],
        responses=s.ViewerStatisticsSerializer,
    )
    @action(detail=False, methods=["get"], url_path="statistics")
    def column_statistics(
        self, request: Request, namespace: str, name: str, number: str
    ) -> Response:
        """Per-column statistics of a file, with the version's statistics job's figures."""
        from datasets import viewer

        record, path, _ = self.opened(s.ViewerFileQuerySerializer)
        own = (record.version.stats.get("files") or {}).get(record.path)
        return viewer_call(
            lambda: {
                "file": record.path,
                "split": record.split,
                "columns": viewer.statistics(path),
                "version_stats": own,
            }
        )
