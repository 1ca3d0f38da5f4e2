"""``make bench-datasets``: the dataset hub's three benchmarks in one run, written as a
dated section into ``docs/benchmarks.md``.

1. validation of a generated 1 GiB chat JSONL (or ``--file PATH``): MB/s, peak RSS,
   with and without the viewer's Parquet copy (:mod:`tests.bench.datasets_validate`);
2. the viewer on a 1,000,000-row version: rows / search / filter latency
   (:mod:`tests.bench.datasets_viewer`);
3. near-duplicate removal on 1,000,000 short rows, ours beside datasketch's own MinHash
   LSH (:mod:`tests.bench.datasets_dedup`).

Each runs in its own process (peak RSS is per process); their Markdown tables are
collected as printed. Aims: validation ≥ 100 MB/s and < 300 MB; viewer p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from tests.bench.gateway import cpu_model, load_average, memory_gib, write_section

ROOT = Path(__file__).resolve().parents[2]


def run_part(module: str, args: Sequence[str]) -> tuple[str, float]:
    """Run ``python -m module args``; its standard output and the seconds it took."""
    started = time.monotonic()
    print(f"==> {module} {' '.join(args)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    took = time.monotonic() - started
    if done.returncode:
        return f"(failed with exit status {done.returncode}; see its output above)\n", took
    # A part's own headings sit under this section's "###" title.
    return re.sub(r"(?m)^#{1,3} ", "#### ", done.stdout.strip()) + "\n", took


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="markdown file to put the section into")
    parser.add_argument("--file", type=Path, help="validate (and view) this file instead")
    parser.add_argument("--size-mb", type=int, default=1024, help="generated JSONL size")
    parser.add_argument("--rows", type=int, default=1_000_000, help="viewer and dedup rows")
    parser.add_argument("--skip", default="", help="comma-separated: validate,viewer,dedup")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    skip = {part.strip() for part in args.skip.split(",") if part.strip()}
    load_before = load_average()
    parts: list[tuple[str, str, float]] = []
    source = ["--file", str(args.file)] if args.file else ["--size-mb", str(args.size_mb)]
    if "validate" not in skip:
        parts.append(("Validation", *run_part("tests.bench.datasets_validate", source)))
    if "viewer" not in skip:
        viewer = ["--file", str(args.file)] if args.file else ["--rows", str(args.rows)]
        parts.append(("Viewer", *run_part("tests.bench.datasets_viewer", viewer)))
    if "dedup" not in skip:
        dedup = ["--rows", str(args.rows)]
        parts.append(("Near-duplicate removal", *run_part("tests.bench.datasets_dedup", dedup)))
    section = render(parts, load_before, load_average(), args)
    print(section)
    if args.output:
        write_section(args.output, section)
    return 0


def render(
    parts: list[tuple[str, str, float]], before: str, after: str, args: argparse.Namespace
) -> str:
    now = datetime.now(UTC)
    what = f"`{args.file}`" if args.file else f"a generated {args.size_mb} MiB chat JSONL"
    lines = [
        f"## Datasets (make bench-datasets, {now:%Y-%m-%d %H:%M})",
        "",
        f"Measured {now:%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs ({cpu_model()}), "
        f"{memory_gib()} memory, Linux {platform.release()}, Python {platform.python_version()}. "
        f"Load average (1/5/15 min) before the run: {before}; after: {after} (other work on "
        "the CPUs lowers the wall-clock numbers; the CPU-second columns are steadier).",
        "",
        f"Validation of {what}; the viewer and near-duplicate removal on {args.rows:,} rows. "
        "Aims: validation ≥ 100 MB/s with peak RSS < 300 MB; viewer p95 < 300 ms for rows, "
        "search and filter.",
        "",
    ]
    for title, table, took in parts:
        lines += [f"### {title} ({took:.0f} s)", "", table]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
