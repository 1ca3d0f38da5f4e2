"""``python -m compute.agent --portal URL --token TOKEN``"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from compute.agent.core import Agent
from compute.agent.metrics import AgentCollector, add_metrics_arguments, serve_metrics
from compute.agent.replica import Listen


def parse_port_range(text: str | tuple[int, int]) -> tuple[int, int]:
    if isinstance(text, tuple):
        return text
    low, _, high = text.partition("-")
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None
    if not 1024 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError("ports must satisfy 1024 <= LOW <= HIGH <= 65535")
    return lo, hi


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m compute.agent", description="openmaas node agent"
    )
    parser.add_argument(
        "--portal",
        default=os.environ.get("OPENMAAS_PORTAL", ""),
        help="portal base URL, e.g. https://maas.example (or OPENMAAS_PORTAL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("OPENMAAS_NODE_TOKEN", ""),
        help="node token (or OPENMAAS_NODE_TOKEN)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(
            os.environ.get("OPENMAAS_AGENT_DIR", Path.home() / ".cache" / "openmaas-agent")
        ),
    )
    parser.add_argument(
        "--address", default="127.0.0.1", help="host the portal reaches this node's replicas on"
    )
    parser.add_argument("--bind-host", default="127.0.0.1", help="interface engines listen on")
    parser.add_argument(
        "--port-range",
        type=parse_port_range,
        default=os.environ.get("OPENMAAS_PORT_RANGE") or None,
        help="LOW-HIGH ports engines may listen on, e.g. 20000-20099 (default: any free)",
    )
    parser.add_argument(
        "--engines", default="", help="comma-separated engines this node offers (default: detected)"
    )
    parser.add_argument("--log-level", default="INFO")
    add_metrics_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s agent: %(message)s")
    if not args.portal:
        print("the portal URL is required (--portal or OPENMAAS_PORTAL)", file=sys.stderr)
        return 2
    if not args.token:
        print("a node token is required (--token or OPENMAAS_NODE_TOKEN)", file=sys.stderr)
        return 2
    if args.metrics_port and not args.metrics_token:
        print("--metrics-port needs --metrics-token (or OPENMAAS_METRICS_TOKEN)", file=sys.stderr)
        return 2
    engines = [e for e in args.engines.split(",") if e] or None
    agent = Agent(
        args.portal,
        args.token,
        args.work_dir,
        address=args.address,
        listen=Listen(args.bind_host, args.port_range),
        engines=engines,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop_requested = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    metrics = None
    if args.metrics_port:
        host = args.metrics_host or args.bind_host
        metrics = serve_metrics(AgentCollector(agent), host, args.metrics_port, args.metrics_token)
    try:
        return agent.run()
    finally:
        if metrics is not None:
            metrics.shutdown()


if __name__ == "__main__":
    sys.exit(main())
