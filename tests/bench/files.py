"""``/v1/files`` with the official SDK against the real web process: upload, ingest,
download and list times, and the web process's peak memory while it streams content.

Starts its own PostgreSQL, Redis and SeaweedFS (in a temporary folder) and uvicorn with
the real ASGI app in a subprocess; the SDK and the ingest (the Celery task function,
called inline) run in this process. Prints a Markdown table.

    python -m tests.bench.files [--sizes-mib 1 16 64] [--list-files 200]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from compute.agent.procs import free_port, spawn, stop, wait_for
from portal.devstack.services import BackingServices

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def say(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


def chat_jsonl(path: Path, size: int) -> None:
    """About ``size`` bytes of valid chat rows."""
    row = {
        "messages": [
            {"role": "user", "content": "Summarise the paragraph. " + "lorem ipsum " * 20},
            {"role": "assistant", "content": "A short summary of the paragraph."},
        ]
    }
    line = (json.dumps(row) + "\n").encode()
    with path.open("wb") as out:
        for _ in range(max(1, size // len(line))):
            out.write(line)


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def stack(root: Path) -> Iterator[tuple[str, int]]:
    """Backing services, a migrated database and uvicorn; yields (base URL, web pid)."""
    services = BackingServices(root, durable=False, say=say)
    web = None
    try:
        os.environ.update(services.start_all())
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "OPENMAAS_DEVSTACK_DIR": str(root),
                "S3_BUCKET_PREFIX": "openmaas-bench",
                "DEBUG": "0",
                "FILES_MAX_BYTES": str(1024 * MIB),
            }
        )
        import django

        django.setup()
        from django.core.management import call_command

        from portal.storage import store

        call_command("migrate", verbosity=0)
        store().ensure_buckets()
        port = free_port()
        web = spawn(
            [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            log=root / "web.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _up(url), timeout_s=60, what="uvicorn")
        yield url, web.pid
    finally:
        if web is not None:
            stop(web)
        services.stop_all()


def _up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def run_jobs() -> None:
    from datasets.models import DatasetJob
    from datasets.tasks import run_dataset_job
    from portal.models.jobs import JobStatus

    while pending := list(
        DatasetJob.objects.filter(status=JobStatus.QUEUED).values_list("pk", flat=True)
    ):
        for pk in pending:
            run_dataset_job(pk)


def measure_size(client: Any, web_pid: int, tmp: Path, size: int) -> dict[str, Any]:
    path = tmp / f"train-{size}.jsonl"
    chat_jsonl(path, size)
    actual = path.stat().st_size
    started = time.perf_counter()
    with path.open("rb") as handle:
        created = client.files.create(file=handle, purpose="fine-tune")
    uploaded = time.perf_counter() - started
    started = time.perf_counter()
    run_jobs()
    ingested = time.perf_counter() - started
    status = client.files.retrieve(created.id).status
    before = peak_rss_mib(web_pid)
    started = time.perf_counter()
    received = 0
    with client.files.with_streaming_response.content(created.id) as response:
        for chunk in response.iter_bytes(MIB):
            received += len(chunk)
    downloaded = time.perf_counter() - started
    assert received == actual, (received, actual)
    path.unlink()
    return {
        "MiB": f"{actual / MIB:.1f}",
        "upload s (MiB/s)": f"{uploaded:.2f} ({actual / MIB / uploaded:.0f})",
        "ingest s": f"{ingested:.2f}",
        "status": status,
        "content s (MiB/s)": f"{downloaded:.2f} ({actual / MIB / downloaded:.0f})",
        "web peak RSS before → after content, MiB": f"{before:.0f} → {peak_rss_mib(web_pid):.0f}",
    }


def measure_list(client: Any, count: int) -> list[dict[str, Any]]:
    for n in range(count):
        client.files.create(file=(f"f{n}.jsonl", io.BytesIO(b"x\n")), purpose="user_data")
    rows = []
    for limit in (20, 10_000):
        started = time.perf_counter()
        rounds = 5
        for _ in range(rounds):
            page = client.files.list(limit=limit)
        elapsed = (time.perf_counter() - started) / rounds
        rows.append(
            {"list": f"limit={limit}", "files": len(page.data), "ms": f"{elapsed * 1000:.0f}"}
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    heads = list(rows[0])
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(str(row[h]) for h in heads) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--list-files", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="openmaas-bench-files-"))
    try:
        with stack(root) as (url, web_pid):
            import openai
            from django.contrib.auth import get_user_model

            from portal.services.keys import create_api_key

            user = get_user_model().objects.create_user(username="bench", password="pw-bench")
            _, key = create_api_key(user, name="bench")
            client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=600)
            rows = [measure_size(client, web_pid, root, n * MIB) for n in args.sizes_mib]
            listing = measure_list(client, args.list_files)
        print(f"## /v1/files ({os.cpu_count()} CPUs, uvicorn 1 worker, SeaweedFS local)\n")
        print(table(rows))
        print()
        print(table(listing))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
