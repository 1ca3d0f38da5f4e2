"""``python -m portal.devstack run``: the whole platform on one machine (``make run``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from portal.devstack.launcher import Launcher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.devstack")
    parser.add_argument("command", nargs="?", default="run", choices=["run"])
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(".devstack"),
        help="where data, logs and secrets live (default .devstack/)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--demo-steps",
        type=int,
        default=None,
        help="training steps for the demo model (default: the builder's)",
    )
    parser.add_argument("--no-agent", action="store_true", help="do not start a node agent")
    args = parser.parse_args(argv)
    launcher = Launcher(
        args.root.resolve(),
        host=args.host,
        port=args.port,
        demo_steps=args.demo_steps,
        with_agent=not args.no_agent,
    )
    return launcher.run()


if __name__ == "__main__":
    sys.exit(main())
