"""The built-in suites on ``openmaas/demo-tiny``, end to end on real parts: a live portal,
a node agent serving the demo model, the gateway in between. Every suite finishes with
per-sample logs, a bootstrap standard error on every metric and the reproducibility
record, and a second run of the same suite gives identical scores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evaluation.models import EvalSample
from evaluation.services import catalog
from evaluation.services.runs import start_run
from portal.models.jobs import JobStatus
from tests.evaluation.conftest import run_now, served_on_pool

pytestmark = pytest.mark.e2e
DEMO = "openmaas/demo-tiny"
SUITES = ("openmaas/general-zh", "openmaas/general-en", "openmaas/safety")
# Docs per task: every task of every suite runs, on a slice small enough for the CPU.
LIMIT = 6


@pytest.fixture
def demo_served(
    live_portal: str, demo_model_dir: Path, admin: Any, tmp_path: Path, settings: Any
) -> Iterator[Any]:
    """``openmaas/demo-tiny``, public, on one replica of a real node agent; runs reach it
    through the live portal's gateway."""
    settings.EVAL_GATEWAY_URL = live_portal
    with served_on_pool(live_portal, demo_model_dir, DEMO, "public", admin, tmp_path) as v:
        yield v


def test_builtin_suites_score_the_demo_model_reproducibly(demo_served: Any, owner: Any) -> None:
    catalog.sync_builtin()
    for ref in SUITES:
        first = run_now(start_run(owner.user, suite=ref, model=DEMO, params={"limit": LIMIT}))
        assert first.status == JobStatus.SUCCEEDED, (ref, first.error)
        tasks = catalog.suite_tasks(first.suite)
        samples = EvalSample.objects.filter(run=first)
        assert samples.count() == first.total_samples == first.done_samples
        assert first.total_samples == LIMIT * len(tasks)
        assert not samples.exclude(error="").exists(), samples.exclude(error="").first().error
        for sample in samples[:5]:
            assert sample.prompt and sample.output is not None and sample.metrics
        for name, task_scores in first.scores["tasks"].items():
            primary = task_scores["primary"]
            assert task_scores[primary]["stderr"] is not None, (name, task_scores)
            assert task_scores[primary]["n"] > 0
            record = first.record["tasks"][name]
            assert {"spec_sha256", "data_sha256", "template", "num_fewshot", "fewshot_seed"} <= set(
                record
            )
        assert first.scores["suite"]["score"] is not None
        assert first.record["model"]["name"] == DEMO
        assert first.record["model"]["revision"] == demo_served.revision
        assert first.record["platform_version"]

        again = run_now(start_run(owner.user, suite=ref, model=DEMO, params={"limit": LIMIT}))
        assert again.status == JobStatus.SUCCEEDED, (ref, again.error)
        assert again.scores == first.scores
        assert again.record["tasks"] == first.record["tasks"]
