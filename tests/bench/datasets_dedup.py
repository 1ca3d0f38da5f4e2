"""Near-duplicate removal on generated short rows: our ``dedup_near`` step beside
datasketch's own ``MinHash`` + ``MinHashLSH`` on the same rows and parameters.

Rows are half Chinese (50-70 Han characters), half English (10-14 made-up words); a
known fraction are near duplicates of an earlier row (one character substituted, a
Jaccard similarity of about 0.85 over 5-character shingles). Each contender runs in
its own child process over the same generated stream and reports its time, its peak
RSS and which rows it removed; the table compares recall of the planted duplicates,
rows removed that were not planted, and agreement between the two.

    python -m tests.bench.datasets_dedup --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

THRESHOLD, NUM_PERM, NGRAM = 0.7, 128, 5
WORDS_SEED, ROWS_SEED = 11, 12


def generate(rows: int, dup_fraction: float) -> Iterator[tuple[str, bool]]:
    """``(text, planted)`` for each row, the same stream for a given ``rows``."""
    rng = random.Random(ROWS_SEED)
    words_rng = random.Random(WORDS_SEED)
    words = [
        "".join(
            words_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(words_rng.randint(3, 9))
        )
        for _ in range(5000)
    ]
    han = [chr(code) for code in range(0x4E00, 0x4E00 + 3000)]
    recent: list[str] = []
    for index in range(rows):
        if recent and rng.random() < dup_fraction:
            base = recent[rng.randrange(len(recent))]
            at = rng.randrange(len(base))
            yield base[:at] + ("好" if base[at] != "好" else "坏") + base[at + 1 :], True
            continue
        if index % 2:
            text = "".join(rng.choices(han, k=rng.randint(50, 70)))
        else:
            text = " ".join(rng.choices(words, k=rng.randint(10, 14)))
        recent.append(text)
        if len(recent) > 10_000:
            recent[rng.randrange(10_000)] = recent.pop()
        yield text, False


def ours(rows: int, dup_fraction: float) -> list[int]:
    """Lines removed by ``dedup_near`` (0-based)."""
    from datasets.pipelines import Row, parse_steps

    (step,) = parse_steps(
        [{"step": "dedup_near", "threshold": THRESHOLD, "num_perm": NUM_PERM, "ngram": NGRAM}]
    )
    source = (
        Row(i, "train", {"text": text}) for i, (text, _) in enumerate(generate(rows, dup_fraction))
    )
    removed: list[int] = []
    following = 0  # the gaps between kept lines are the removed ones
    for row in step.apply(source):
        removed.extend(range(following, row.line))
        following = row.line + 1
    removed.extend(range(following, rows))
    return removed


def shingles(text: str) -> list[bytes]:
    text = " ".join(text.split()).lower()
    if len(text) < NGRAM:
        return [text.encode()]
    return [text[i : i + NGRAM].encode() for i in range(len(text) - NGRAM + 1)]


def datasketch_lsh(rows: int, dup_fraction: float) -> list[int]:
    """Lines removed by datasketch ``MinHash`` (its default scheme) + ``MinHashLSH``,
    query then insert, kept rows only; signatures built with ``MinHash.generator``."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    removed = []
    texts = (shingles(text) for text, _ in generate(rows, dup_fraction))
    for index, minhash in enumerate(MinHash.generator(texts, num_perm=NUM_PERM)):
        if lsh.query(minhash):
            removed.append(index)
        else:
            lsh.insert(index, minhash, check_duplication=False)
    return removed


CONTENDERS = {"ours": ours, "datasketch": datasketch_lsh}


def child(name: str, rows: int, dup_fraction: float, out: Path) -> None:
    if name == "ours":
        # portal.errors (the steps' error type) needs configured settings; not timed.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        import django

        django.setup()
    started = time.perf_counter()
    removed = CONTENDERS[name](rows, dup_fraction)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    np.save(out / f"{name}.npy", np.asarray(removed, dtype=np.int64))
    (out / f"{name}.json").write_text(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": usage.ru_utime + usage.ru_stime,
                "peak_kib": usage.ru_maxrss,
            }
        )
    )


def planted(rows: int, dup_fraction: float) -> np.ndarray:
    return np.fromiter(
        (flag for _, flag in generate(rows, dup_fraction)), dtype=np.bool_, count=rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dup-fraction", type=float, default=0.2)
    parser.add_argument("--only", choices=sorted(CONTENDERS), action="append")
    parser.add_argument("--child", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows, args.dup_fraction, args.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        names = args.only or list(CONTENDERS)
        for name in names:
            command = [
                sys.executable,
                "-m",
                "tests.bench.datasets_dedup",
                "--child",
                name,
                "--out",
                tmp,
            ]
            command += ["--rows", str(args.rows), "--dup-fraction", str(args.dup_fraction)]
            subprocess.run(command, check=True)
        report(names, out, planted(args.rows, args.dup_fraction), args)


def report(names: list[str], out: Path, truth: np.ndarray, args: argparse.Namespace) -> None:
    removed = {name: np.load(out / f"{name}.npy") for name in names}
    print(
        f"## Near-duplicate removal, {args.rows:,} rows ({truth.sum():,} planted near duplicates)\n"
    )
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"threshold {THRESHOLD}, num_perm {NUM_PERM}, {NGRAM}-character shingles; {machine}\n")
    print(
        "| contender | seconds | CPU s | rows/s (wall) | peak RSS MiB | removed "
        "| planted found (recall) | removed, not planted |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        stats = json.loads((out / f"{name}.json").read_text())
        hits = int(truth[removed[name]].sum())
        recall = hits / max(int(truth.sum()), 1)
        print(
            f"| {name} | {stats['seconds']:.1f} | {stats['cpu']:.1f} "
            f"| {args.rows / stats['seconds']:,.0f} "
            f"| {stats['peak_kib'] / 1024:,.0f} "
            f"| {len(removed[name]):,} | {hits:,} ({recall:.2%}) | {len(removed[name]) - hits:,} |"
        )
    if len(names) == 2:
        a, b = (set(removed[name].tolist()) for name in names)
        print(
            f"\nRows removed by both: {len(a & b):,}; only by {names[0]}: {len(a - b):,}; "
            f"only by {names[1]}: {len(b - a):,}."
        )


if __name__ == "__main__":
    main()
