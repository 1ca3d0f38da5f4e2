"""``/metrics`` on web: token-protected Prometheus text with request and pool metrics."""

from __future__ import annotations

from django.test import Client, override_settings
from django.utils import timezone

from compute.metering.metrics import observe
from compute.models import Node, NodeStatus
from tests.factories import deployment
from tests.metering.conftest import usage_event

TOKEN = "metrics-secret-for-tests"


def scrape(token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    answer = Client().get("/metrics", **headers)
    return answer.status_code, answer.content.decode()


def sample(text: str, prefix: str) -> float:
    """The value of the exposition line starting with ``prefix`` (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@override_settings(METRICS_TOKEN=TOKEN)
def test_metrics_need_the_token(db):
    assert scrape(None)[0] == 401
    assert scrape("wrong")[0] == 401
    assert scrape()[0] == 200


@override_settings(METRICS_TOKEN="")
def test_metrics_are_absent_without_a_configured_token(db):
    assert scrape()[0] == 404


@override_settings(METRICS_TOKEN=TOKEN)
def test_observed_requests_show_as_counters_and_histograms(db, owner):
    series = 'openmaas_inference_requests_total{model="m/observed",status="200"}'
    before = sample(scrape()[1], series)

    observe(usage_event(owner.user.pk, model="m/observed", model_version_id=1, ttft_ms=80.0))
    observe(usage_event(owner.user.pk, model="m/observed", model_version_id=1))
    observe(usage_event(owner.user.pk, model="random-name-123", status=404))

    _status, text = scrape()
    assert sample(text, series) == before + 2
    assert sample(text, 'openmaas_prompt_tokens_total{model="m/observed"}') >= 20
    assert sample(text, 'openmaas_request_latency_seconds_count{model="m/observed"}') >= 2
    assert sample(text, 'openmaas_time_to_first_token_seconds_count{model="m/observed"}') >= 1
    assert 'model="(unrouted)",status="404"' in text and "random-name-123" not in text


@override_settings(METRICS_TOKEN=TOKEN)
def test_pool_gauges_show_replicas_by_state_and_node_heartbeats(db, owner):
    node = Node.objects.create(
        name="gpu-box",
        token_hash="h" * 64,
        token_prefix="n-",
        status=NodeStatus.READY,
        last_heartbeat_at=timezone.now(),
        gpus=[{"index": 0, "name": "H100", "memory_bytes": 80 * 2**30}],
    )
    served = deployment(owner.user, "pooled")
    served.replica_set.create(node=node, status="ready")
    served.replica_set.create(status="pending")

    text = scrape()[1]
    assert sample(text, 'openmaas_replicas{model="olivia/pooled",state="ready"}') == 1
    assert sample(text, 'openmaas_replicas{model="olivia/pooled",state="pending"}') == 1
    assert sample(text, 'openmaas_node_up{node="gpu-box",state="ready"}') == 1
    assert 0 <= sample(text, 'openmaas_node_heartbeat_age_seconds{node="gpu-box"}') < 60
    assert sample(text, 'openmaas_node_gpu_memory_bytes{gpu="0",node="gpu-box"}') == 80 * 2**30


@override_settings(METRICS_TOKEN=TOKEN)
def test_a_mixed_batch_counts_each_model_and_status_as_its_events_one_by_one(db, owner):
    """The gateway observes its usage rows a batch at a time (``observe_all``): a batch of
    several models, statuses and unrouted names moves each series as the events would one
    by one."""
    from dataclasses import astuple

    from compute.metering.metrics import observe_all

    user = owner.user.pk
    events = [
        usage_event(user, model="m/batch-a", model_version_id=1, ttft_ms=30.0, latency_ms=70.0),
        usage_event(user, model="m/batch-b", model_version_id=2, latency_ms=400.0),
        usage_event(user, model="m/batch-a", model_version_id=1, status=429, latency_ms=1.0),
        usage_event(user, model="m/batch-a", model_version_id=1, ttft_ms=600.0),
        usage_event(user, model="m/batch-nowhere", status=404),
    ]
    before = scrape()[1]
    observe_all([(*astuple(event)[:-1], None, None) for event in events])
    after = scrape()[1]

    def moved(prefix: str) -> float:
        return sample(after, prefix) - sample(before, prefix)

    requests = "openmaas_inference_requests_total"
    assert moved(f'{requests}{{model="m/batch-a",status="200"}}') == 2
    assert moved(f'{requests}{{model="m/batch-a",status="429"}}') == 1
    assert moved(f'{requests}{{model="m/batch-b",status="200"}}') == 1
    assert moved(f'{requests}{{model="(unrouted)",status="404"}}') == 1
    prompt = sum(e.prompt_tokens for e in events[:4] if e.model == "m/batch-a")
    assert moved('openmaas_prompt_tokens_total{model="m/batch-a"}') == prompt
    latency = "openmaas_request_latency_seconds"
    assert moved(f'{latency}_count{{model="m/batch-a"}}') == 3
    assert moved(f'{latency}_bucket{{le="0.05",model="m/batch-a"}}') == 1
    assert moved(f'{latency}_bucket{{le="0.5",model="m/batch-b"}}') == 1
    assert moved(f'{latency}_bucket{{le="0.25",model="m/batch-b"}}') == 0
    ttft = "openmaas_time_to_first_token_seconds"
    assert moved(f'{ttft}_count{{model="m/batch-a"}}') == 2
    assert moved(f'{ttft}_bucket{{le="0.05",model="m/batch-a"}}') == 1
    assert moved(f'{ttft}_count{{model="m/batch-b"}}') == 0
    assert "m/batch-nowhere" not in after


MULTIPROCESS_SCRIPT = """
import multiprocessing, os, sys
import django
django.setup()
from prometheus_client import generate_latest
from compute.metering.metrics import observe, request_registry
from tests.metering.conftest import usage_event

def worker():
    observe(usage_event(1, model="m/multi", model_version_id=1))

children = [multiprocessing.get_context("fork").Process(target=worker) for _ in range(2)]
for child in children:
    child.start()
for child in children:
    child.join()
sys.stdout.write(generate_latest(request_registry()).decode())
"""


def test_multiprocess_mode_sums_the_workers(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    text = result.stdout.decode()
    assert sample(text, 'openmaas_inference_requests_total{model="m/multi",status="200"}') == 2


def test_observing_many_values_at_once_counts_as_observing_each():
    """The gateway observes a batch of latencies per model in one go
    (``observe_many``, through prometheus-client's bucket values): the buckets, count
    and sum come out as ``observe`` gives them one by one, bounds and +Inf included."""
    from prometheus_client import CollectorRegistry, Histogram

    from compute.metering.metrics import LATENCY_BUCKETS, observe_many

    registry = CollectorRegistry()
    values = [0.0, 0.05, 0.0500001, 0.1, 0.3, 2.5, 299.9, 300, 301, 1e9, 0.07, 0.07]
    one_by_one = Histogram("one", "", buckets=LATENCY_BUCKETS, registry=registry)
    batched = Histogram("many", "", buckets=LATENCY_BUCKETS, registry=registry)
    for value in values:
        one_by_one.observe(value)
    observe_many(batched, values)

    def samples(name: str) -> list[tuple[str, dict[str, str], float]]:
        (metric,) = [m for m in registry.collect() if m.name == name]
        return [
            (s.name.removeprefix(name), s.labels, round(s.value, 6))
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    assert samples("many") == samples("one")
    assert ("_bucket", {"le": "+Inf"}, len(values)) in samples("many")
