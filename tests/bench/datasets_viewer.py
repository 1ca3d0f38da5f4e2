"""Viewer query latency on a 1,000,000-row split: rows, search, filter, statistics.

    python -m tests.bench.datasets_viewer [--rows N] [--file PATH]

Generates chat-like rows (Chinese and English, a few scalar columns) in the ingest's
Parquet layout in a temporary folder (or uses ``--file``; its search index is written
next to it), then prints p50 / p95 / max in milliseconds as a Markdown table. "cold" calls
see a query for the first time (its page found; search and filter without orderby count
on for at most ``scan.COUNT_BUDGET_S``, then answer ``partial``); "warm" calls page
through queries already seen (and count on where the count is unfinished).
"""

from __future__ import annotations

import argparse
import random
import statistics as stats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from datasets import viewer
from datasets.viewer.query import cursor

HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研"  # noqa: E501
WORDS = [
    "the",
    "model",
    "answer",
    "question",
    "data",
    "learn",
    "python",
    "system",
    "write",
    "code",
    "help",
    "please",
    "explain",
    "train",
    "score",
    "token",
    "language",
    "example",
    "result",
    "value",
    "test",
    "query",
    "search",
    "vector",
    "matrix",
    "gradient",
    "loss",
    "batch",
    "epoch",
    "layer",
    "attention",
    "memory",
    "server",
    "latency",
    "cluster",
]
RARE = "独角兽 unicorn"


def _message(rng: random.Random, zh: bool, size: int) -> str:
    if zh:
        return "".join(rng.choice(HAN) for _ in range(size))
    return " ".join(rng.choice(WORDS) for _ in range(size // 3 + 1)).capitalize()


def generate(path: Path, n: int, seed: int = 6) -> Path:
    """Write ``n`` chat rows to ``path``: a pool of 4,000 conversations reused at random,
    and ``RARE`` in one row in 100,000."""
    rng = random.Random(seed)
    pool = []
    for k in range(4000):
        zh = k % 2 == 0
        turns = [
            {"role": "user", "content": _message(rng, zh, rng.randint(10, 60))},
            {"role": "assistant", "content": _message(rng, zh, rng.randint(30, 200))},
        ]
        pool.append((orjson.dumps(turns).decode(), "zh" if zh else "en"))
    picks = [rng.randrange(len(pool)) for _ in range(n)]
    messages = [pool[p][0] for p in picks]
    for i in range(7, n, 100_000):
        messages[i] = orjson.dumps([{"role": "user", "content": f"{RARE} {i}"}]).decode()
    table = pa.table(
        {
            "__row__": pa.array(range(1, n + 1), pa.int64()),
            "id": [f"ex-{i:07d}" for i in range(n)],
            "messages": messages,
            "lang": [pool[p][1] for p in picks],
            "score": pa.array([rng.randint(1, 5) for _ in range(n)], pa.int64()),
            "quality": [rng.random() for _ in range(n)],
            "flagged": [rng.random() < 0.1 for _ in range(n)],
            "note": [None if rng.random() < 0.7 else rng.choice(WORDS) for _ in range(n)],
        }
    ).replace_schema_metadata({"openmaas.json_columns": '["messages"]'})
    pq.write_table(table, path, row_group_size=20_000, compression="zstd")
    return path


def timed(calls: list[Callable[[], object]]) -> list[float]:
    spent = []
    for call in calls:
        start = time.perf_counter()
        call()
        spent.append((time.perf_counter() - start) * 1000)
    return spent


def line(name: str, spent: list[float]) -> str:
    cut = stats.quantiles(spent, n=20, method="inclusive") if len(spent) > 1 else spent * 19
    return (
        f"| {name} | {len(spent)} | {stats.median(spent):.1f} | {cut[18]:.1f} | {max(spent):.1f} |"
    )


def search_queries(rng: random.Random) -> list[str]:
    common = [*rng.sample(WORDS, 20), *rng.sample(HAN, 15)]
    pairs = ["".join(rng.sample(HAN, 2)) for _ in range(8)]
    return [*common, *pairs, "独角兽", "unicorn", "UNICORN 7", "没有这个词", "zzqx", "独角兽 u"]


def filter_queries(rng: random.Random) -> list[str]:
    wheres = []
    for k in range(50):
        q = round(rng.random(), 3)
        wheres.append(
            [
                f"score >= {k % 5 + 1} AND lang = 'zh' AND quality < {q}",
                f"flagged = true AND quality > {q}",
                f"note is not null AND note startswith '{rng.choice(WORDS)[:2]}'",
                f"note contains '{rng.choice(WORDS)}' AND score = {k % 5 + 1}",
                f"messages contains '{rng.choice(HAN)}{rng.choice(HAN)}' AND __row__ > {k}",
            ][k % 5]
        )
    return wheres


def connections() -> list[str]:
    def fresh() -> None:
        duckdb.connect().execute("SELECT 42").fetchall()

    def shared() -> None:
        cursor().execute("SELECT 42").fetchall()

    return [
        line("DuckDB: a new database per call", timed([fresh] * 200)),
        line("DuckDB: a cursor on the shared database (the viewer)", timed([shared] * 200)),
    ]


def run(path: Path) -> list[str]:
    rng = random.Random(1)
    n = viewer.info(path)["num_rows"]
    offsets = [rng.randrange(max(1, n - 100)) for _ in range(50)]
    out = [
        line("rows (Parquet only)", timed([lambda o=o: viewer.rows(path, o, 100) for o in offsets]))
    ]
    start = time.perf_counter()
    viewer.build_search_index(path)
    out.append(line("build_search_index (once)", [(time.perf_counter() - start) * 1000]))
    out.append(
        line("rows (indexed)", timed([lambda o=o: viewer.rows(path, o, 100) for o in offsets]))
    )
    queries = search_queries(rng)
    out.append(
        line("search, cold", timed([lambda q=q: viewer.search(path, q, 0, 100) for q in queries]))
    )
    pages = [(rng.choice(queries), rng.randrange(0, 300, 100)) for _ in range(50)]
    out.append(
        line(
            "search, warm pages",
            timed([lambda a=a: viewer.search(path, a[0], a[1], 100) for a in pages]),
        )
    )
    wheres = filter_queries(rng)
    out.append(
        line("filter, cold", timed([lambda w=w: viewer.filter(path, w, 0, 100) for w in wheres]))
    )
    out.append(
        line(
            "filter + orderby, cold",
            timed(
                [
                    lambda w=w: viewer.filter(path, w, 100, 100, orderby="quality desc")
                    for w in wheres[:10]
                ]
            ),
        )
    )
    out.append(
        line(
            "filter, warm pages",
            timed([lambda w=w: viewer.filter(path, w, 100, 100) for w in wheres]),
        )
    )
    out.append(line("statistics (once)", timed([lambda: viewer.statistics(path)])))
    return out + connections()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path, help="an existing split file in the layout")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.file
        if path is None:
            start = time.perf_counter()
            path = generate(Path(folder) / "train.parquet", args.rows)
            print(f"generated {args.rows:,} rows in {time.perf_counter() - start:.1f} s")
        size = path.stat().st_size / 2**20
        print(f"\n{viewer.info(path)['num_rows']:,} rows, {size:.0f} MiB Parquet\n")
        print("| operation | calls | p50 ms | p95 ms | max ms |\n|---|---:|---:|---:|---:|")
        print("\n".join(run(path)))


if __name__ == "__main__":
    main()
