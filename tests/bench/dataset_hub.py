"""The dataset hub page's latency as the hub grows: render ``/datasets/`` (facets over
every visible dataset, one page of results) for an anonymous visitor.

    python -m tests.bench.dataset_hub [--sizes 1000,10000] [--calls 20]

Starts its own PostgreSQL, Redis and SeaweedFS (as the test session does), migrates,
bulk-creates public datasets with random task categories, languages and licenses, and
prints p50 / p95 in milliseconds per hub size and query as a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from portal.devstack.services import BackingServices

QUERIES = {
    "all, by update": "/datasets/",
    "by stars": "/datasets/?sort=stars",
    "task + language": "/datasets/?task=text-generation&language=zh",
    "search": "/datasets/?q=set-9",
}
TASKS = ["text-generation", "question-answering", "summarization", "translation"]
LANGUAGES = ["zh", "en", "ja", "fr"]
LICENSES = ["mit", "apache-2.0", "cc-by-4.0", ""]


def setup_django(root: Path) -> BackingServices:
    stack = BackingServices(root, durable=False, say=lambda msg: None)
    os.environ.update(stack.start_all())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return stack


def fill_hub(total: int) -> None:
    """Grow the hub to ``total`` public datasets owned by one user."""
    from django.contrib.auth import get_user_model

    from datasets.models import DatasetRepo

    user, _ = get_user_model().objects.get_or_create(username="bench")
    have = DatasetRepo.objects.count()
    rng = random.Random(total)
    repos = []
    for n in range(have, total):
        repo = DatasetRepo(
            name=f"set-{n}",
            visibility="public",
            task_categories=rng.sample(TASKS, 1),
            languages=rng.sample(LANGUAGES, 2),
            license=rng.choice(LICENSES),
            tags=[f"tag-{n % 50}"],
            star_count=rng.randrange(1000),
        )
        repo.set_owner(user)
        repos.append(repo)
    DatasetRepo.objects.bulk_create(repos, batch_size=2000)


def timed(client: Any, path: str, calls: int) -> tuple[float, float]:
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.status_code
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="openmaas-bench-hub-") as tmp:
        stack = setup_django(Path(tmp))
        try:
            from django.test import Client

            print("| datasets | query | p50 ms | p95 ms |\n|---:|---|---:|---:|")
            for size in sorted(int(s) for s in args.sizes.split(",")):
                fill_hub(size)
                client = Client()
                for label, path in QUERIES.items():
                    p50, p95 = timed(client, path, args.calls)
                    print(f"| {size} | {label} | {p50:.1f} | {p95:.1f} |")
        finally:
            stack.stop_all()


if __name__ == "__main__":
    main()
