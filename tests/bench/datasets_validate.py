"""Benchmark of dataset validation: MB/s and peak memory of `validate_file`, with and
without the viewer's Parquet copy, each run in a fresh child process.

    python -m tests.bench.datasets_validate --size-mb 1024   # generated chat JSONL
    python -m tests.bench.datasets_validate --file PATH      # any dataset file

Prints a Markdown table. The generated file (and every copy) lives in a temporary
directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

ZH = (
    "请解释一下梯度下降算法的基本原理。",
    "今天北京的天气怎么样？适合出去散步吗？",
    "帮我把这段话翻译成英文，并保持语气正式。",
    "机器学习模型在训练时为什么会出现过拟合？",
    "根据上面的表格，计算每个季度的平均销售额。",
    "这是一个很好的问题。首先，我们需要了解数据的分布情况，然后再选择合适的模型。",
    "总的来说，这种方法在大多数情况下都能取得不错的效果，但也存在一些局限性。",
)
EN = (
    "Can you summarise the main argument of this article in three sentences?",
    "Write a Python function that returns the n-th Fibonacci number.",
    "The capital of Australia is Canberra, not Sydney as many people assume.",
    "Gradient descent updates the parameters in the direction of the negative gradient.",
    "Here is a step-by-step explanation, followed by a short worked example.",
    "I am sorry, but I cannot help with that request. Is there anything else?",
    "Overfitting happens when a model learns noise in the training data.",
)


def _text(rng: random.Random, pool: Sequence[str], low: int, high: int) -> str:
    return " ".join(rng.choice(pool) for _ in range(rng.randint(low, high)))


def chat_row(rng: random.Random) -> dict[str, Any]:
    pool = ZH if rng.random() < 0.5 else EN
    messages = [{"role": "system", "content": _text(rng, pool, 1, 2)}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": _text(rng, pool, 1, 4)})
        messages.append({"role": "assistant", "content": _text(rng, pool, 2, 12)})
    return {"messages": messages}


def generate(path: Path, size_mb: int, seed: int = 7) -> None:
    """A chat JSONL of about ``size_mb`` MiB: half Chinese, half English, 1-3 turns."""
    rng, target, written = random.Random(seed), size_mb * 2**20, 0
    with path.open("wb") as out:
        while written < target:
            lines = b"".join(orjson.dumps(chat_row(rng)) + b"\n" for _ in range(1000))
            out.write(lines)
            written += len(lines)


def child(path: str, parquet_out: str | None) -> None:
    from datasets.formats import validate_file

    start = time.perf_counter()
    report = validate_file(
        Path(path), Path(path).name, parquet_out=Path(parquet_out) if parquet_out else None
    )
    seconds = time.perf_counter() - start
    print(
        orjson.dumps({"seconds": seconds, "rows": report.rows, "valid": report.valid_rows}).decode()
    )


def measure(path: Path, parquet_out: Path | None) -> dict[str, Any]:
    """Runs one validation in a child; its own rusage gives the peak RSS."""
    command = [sys.executable, "-m", "tests.bench.datasets_validate", "--child", str(path)]
    if parquet_out is not None:
        command += ["--parquet-out", str(parquet_out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"validation child failed with status {proc.returncode}")
    result: dict[str, Any] = orjson.loads(output.splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024
    # CPU time as well as wall time: on a shared box the wall clock measures neighbours.
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    result["copy_mb"] = parquet_out.stat().st_size / 2**20 if parquet_out else None
    return result


def table(path: Path, results: dict[str, dict[str, Any]]) -> str:
    size_mb = path.stat().st_size / 2**20
    lines = [
        f"Validation of `{path.name}` ({size_mb:,.0f} MiB, {os.cpu_count()} CPUs)",
        "",
        "| run | rows | valid | wall s | MB/s wall | CPU s | MB/s CPU | peak RSS MB | copy MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        copy = f"{r['copy_mb']:,.0f}" if r["copy_mb"] is not None else "-"
        lines.append(
            f"| {name} | {r['rows']:,} | {r['valid']:,} | {r['seconds']:.1f} "
            f"| {size_mb / r['seconds']:.0f} | {r['cpu_seconds']:.1f} "
            f"| {size_mb / r['cpu_seconds']:.0f} | {r['peak_rss_mb']:.0f} | {copy} |"
        )
    return "\n".join(lines)


def run(path: Path, workdir: Path) -> str:
    results = {
        "validate": measure(path, None),
        "validate + Parquet copy": measure(path, workdir / "copy.parquet"),
    }
    return table(path, results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the generated file")
    parser.add_argument("--file", type=Path, help="validate this file instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--parquet-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.parquet_out)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        workdir = Path(tmp)
        path = args.file
        if path is None:
            path = workdir / "chat.jsonl"
            generate(path, args.size_mb)
        print(run(path, workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
