"""Prometheus metrics of the gateway and the pool (``prometheus-client``).

The gateway calls :func:`observe` once per inference request, after it answered, in
the same place it publishes the :class:`~compute.metering.UsageEvent`.
"""

from __future__ import annotations

from compute.metering import UsageEvent


def observe(event: UsageEvent) -> None:
    """Count the request, its tokens, latency and time to first token by model."""
