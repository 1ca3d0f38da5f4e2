"""The compute pool as Prometheus gauges, computed from the database when scraped."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

from compute.models import Node, Replica, ReplicaStatus


def pool_gauges() -> Iterator[Metric]:
    yield _replicas()
    yield from _nodes()


def _replicas() -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "openmaas_replicas", "Engine replicas by model and state.", labels=["model", "state"]
    )
    rows = (
        Replica.objects.exclude(status=ReplicaStatus.STOPPED)
        .values("deployment__served_name", "status")
        .annotate(n=Count("id"))
        .order_by("deployment__served_name", "status")
    )
    for row in rows:
        family.add_metric([row["deployment__served_name"], row["status"]], row["n"])
    return family


def _nodes() -> Iterator[GaugeMetricFamily]:
    status = GaugeMetricFamily(
        "openmaas_node_up", "1 for each node, labelled by its state.", labels=["node", "state"]
    )
    age = GaugeMetricFamily(
        "openmaas_node_heartbeat_age_seconds",
        "Seconds since the node's last heartbeat.",
        labels=["node"],
    )
    gpus = GaugeMetricFamily(
        "openmaas_node_gpus", "GPUs the node reported at registration.", labels=["node"]
    )
    gpu_memory = GaugeMetricFamily(
        "openmaas_node_gpu_memory_bytes",
        "Memory of each GPU the node reported (utilisation: the agent's own /metrics).",
        labels=["node", "gpu"],
    )
    now = timezone.now()
    for node in Node.objects.only("name", "status", "last_heartbeat_at", "gpus"):
        status.add_metric([node.name, node.status], 1)
        if node.last_heartbeat_at is not None:
            age.add_metric([node.name], (now - node.last_heartbeat_at).total_seconds())
        gpus.add_metric([node.name], node.gpu_count)
        for gpu in node.gpus or []:
            memory = gpu.get("memory_bytes") if isinstance(gpu, dict) else None
            if isinstance(memory, int | float):
                gpu_memory.add_metric([node.name, str(gpu.get("index", ""))], memory)
    yield from (status, age, gpus, gpu_memory)
