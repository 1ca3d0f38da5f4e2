"""The agent's own Prometheus endpoint: its replicas' states and restarts, and each
GPU's utilisation and memory where NVML (``nvidia-ml-py``) answers.

Served on ``--metrics-port`` by a small threaded HTTP server; every request needs
``Authorization: Bearer <--metrics-token>``. Like the rest of the agent, this imports
nothing from Django or the portal.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

logger = logging.getLogger("compute.agent")

STATES = ("starting", "ready", "failed", "stopped")


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("OPENMAAS_METRICS_PORT") or 0),
        help="serve Prometheus /metrics on this port (0: off; or OPENMAAS_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-host",
        default=os.environ.get("OPENMAAS_METRICS_HOST", ""),
        help="interface /metrics listens on (default: --bind-host)",
    )
    parser.add_argument(
        "--metrics-token",
        default=os.environ.get("OPENMAAS_METRICS_TOKEN", ""),
        help="bearer token /metrics requires (prefer OPENMAAS_METRICS_TOKEN: argv is visible)",
    )


class _Replica(Protocol):
    id: int
    status: str
    restarts: int
    desired: dict[str, Any]


class _Agent(Protocol):
    local: dict[int, Any]


class AgentCollector:
    """Reads the agent's replicas (and NVML) at scrape time."""

    def __init__(self, agent: _Agent) -> None:
        self.agent = agent

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        replicas: list[_Replica] = list(self.agent.local.values())
        states = GaugeMetricFamily(
            "openmaas_agent_replicas", "Replicas on this node by state.", labels=["state"]
        )
        counts = Counter(r.status for r in replicas)
        for state in sorted(set(STATES) | counts.keys()):
            states.add_metric([state], counts.get(state, 0))
        restarts = CounterMetricFamily(
            "openmaas_agent_replica_restarts",
            "Times the agent restarted each replica's engine.",
            labels=["replica", "model"],
        )
        for r in replicas:
            restarts.add_metric([str(r.id), str(r.desired.get("served_name", ""))], r.restarts)
        yield states
        yield restarts
        yield from gpu_metrics()


def gpu_metrics() -> Iterator[Metric]:
    """Utilisation and memory of each GPU; nothing where NVML is absent or fails."""
    try:
        import pynvml
    except ImportError:
        return
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return
    utilisation = GaugeMetricFamily(
        "openmaas_gpu_utilization_percent", "GPU busy time, last sample.", labels=["gpu"]
    )
    used = GaugeMetricFamily("openmaas_gpu_memory_used_bytes", "GPU memory used.", labels=["gpu"])
    total = GaugeMetricFamily("openmaas_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            utilisation.add_metric([str(index)], rates.gpu)
            used.add_metric([str(index)], memory.used)
            total.add_metric([str(index)], memory.total)
    except pynvml.NVMLError as exc:
        logger.warning("NVML failed while reading GPU metrics: %s", exc)
    finally:
        pynvml.nvmlShutdown()
    yield from (utilisation, used, total)


def serve_metrics(
    collector: AgentCollector, host: str, port: int, token: str
) -> ThreadingHTTPServer:
    """Serve ``GET /metrics`` on ``host:port`` in a daemon thread; returns the server
    (``shutdown()`` stops it). Raises ValueError without a token."""
    if not token:
        raise ValueError("a metrics token is required to serve metrics")
    registry = CollectorRegistry()
    registry.register(collector)
    server = ThreadingHTTPServer((host, port), _handler(registry, token))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics on http://%s:%s/metrics", host, server.server_address[1])
    return server


def _handler(registry: CollectorRegistry, token: str) -> type[BaseHTTPRequestHandler]:
    expected = f"Bearer {token}".encode()

    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self._answer(404, b"not found\n", "text/plain")
                return
            supplied = (self.headers.get("Authorization") or "").encode("latin-1", "replace")
            if not hmac.compare_digest(supplied, expected):
                self._answer(401, b"metrics token required\n", "text/plain")
                return
            self._answer(200, generate_latest(registry), CONTENT_TYPE_LATEST)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="metrics"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes every few seconds would flood the agent's log

    return MetricsHandler
