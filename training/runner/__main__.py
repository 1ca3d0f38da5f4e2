"""``python -m training.runner --spec spec.json``: train, report, exit.

Exit codes: 0 finished (or stopped by a cancel), 1 failed (the error was reported as an
event first), 3 superseded (the portal refused this attempt: nothing more is reported),
70 the agent died (stdin reached EOF).
"""

from __future__ import annotations

import argparse
import logging
import os
import stat
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

EXIT_ORPHANED = 70


def _watched(fd: int) -> bool:
    """Whether stdin is something an agent holds open (a pipe or socket), not a terminal,
    /dev/null or a closed descriptor."""
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return not stat.S_ISCHR(info.st_mode)  # terminals and /dev/null are character devices


def watch_stdin(fd: int = 0) -> None:
    """Exit at once when stdin reaches EOF: the agent that holds its other end died."""
    if not _watched(fd):
        return

    def wait() -> None:
        try:
            while os.read(fd, 4096):
                pass
        except OSError:
            pass
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=wait, name="stdin-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.runner")
    parser.add_argument("--spec", type=Path, required=True, help="the job's spec.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    watch_stdin()

    from training.runner.run import run_spec

    return run_spec(args.spec)


if __name__ == "__main__":
    sys.exit(main())
