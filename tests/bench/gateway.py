"""``make bench-gateway``: the gateway's added latency and throughput, on loopback.

Starts the real backing services (PostgreSQL, Redis, SeaweedFS), a stub engine that
answers at once (:mod:`tests.bench.stub_engine`), seeds a user, an API key and a ready
replica pointing at the stub, and starts the web process (uvicorn, the real ASGI app:
key authentication through Redis and routing from the database are in the path). Then
``wrk``, in its own process, drives ``POST /v1/chat/completions`` first at the stub
directly, then through the gateway, streamed and not, at 1 and 64 clients; each cell
gets a warm-up and a bounded measured run. The results replace the section
"Gateway (make bench-gateway)" of the output file; every process is stopped at the end,
on error and on Ctrl-C.

    python -m tests.bench.gateway --output docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compute.agent.procs import free_port, spawn, stop, wait_for
from portal.devstack.services import BackingServices

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## Gateway (make bench-gateway)"
PATH = "/v1/chat/completions"
SERVED_NAME = "bench/stub"
MARK = "BENCH_JSON "
AIM_RPS = 500
AIM_ADDED_P50_MS = 3.0

# wrk's Lua side: a POST with a JSON body and the key, and a done() hook that prints
# the counters and percentiles (microseconds) as one JSON line.
LUA = """\
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"mean_us":%%.1f,"max_us":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d}\\n',
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), latency.mean, latency.max, e.connect, e.read,
    e.write, e.status, e.timeout))
end
"""


@dataclass
class Cell:
    """One measured run: a target, streamed or not, a number of clients."""

    target: str
    stream: bool
    clients: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int

    @classmethod
    def from_wrk(cls, target: str, stream: bool, clients: int, raw: dict[str, Any]) -> Cell:
        errors = sum(int(raw[k]) for k in ("connect", "read", "write", "status", "timeout"))
        return cls(
            target,
            stream,
            clients,
            raw["requests"] / (raw["duration_us"] / 1e6),
            raw["p50_us"] / 1000,
            raw["p99_us"] / 1000,
            errors,
        )


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- the stack --------------------------------------------------------------------------


def request_body(stream: bool) -> str:
    return json.dumps(
        {
            "model": SERVED_NAME,
            "max_tokens": 8,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    )


def http(
    url: str, *, key: str = "", body: str | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    """One request with the standard library; the status and body (errors included)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def seed_main() -> None:
    """Run in a child with the stack's environment: seed, then print the raw API key."""
    import django

    django.setup()
    print(seed(sys.argv[1]))


def seed(stub_url: str) -> str:
    """A user and key, a public repo and version, a ready node, deployment and replica."""
    from django.contrib.auth import get_user_model

    from compute.models import Deployment, Node, NodeStatus, Replica, ReplicaStatus
    from portal.models import ModelRepo, ModelVersion
    from portal.models.ownership import Visibility
    from portal.services.keys import create_api_key

    user = get_user_model().objects.create_user(username="bench", password="bench-pw-1")
    _, raw = create_api_key(user, name="bench")
    repo = ModelRepo(name="stub", visibility=Visibility.PUBLIC, created_by=user)
    repo.set_owner(user)
    repo.save()
    version = ModelVersion.objects.create(
        repo=repo, number=1, revision="0" * 64, model_type="llama", config={}
    )
    node = Node.objects.create(name="bench-node", token_hash="b" * 64, status=NodeStatus.READY)
    deployment = Deployment.objects.create(
        model_version=version, served_name=repo.full_name, replicas=1
    )
    Replica.objects.create(
        deployment=deployment, node=node, status=ReplicaStatus.READY, url=stub_url
    )
    return raw


class Stack:
    """The processes of one run; :meth:`close` stops whatever was started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services = BackingServices(root, durable=False, say=say)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.stub_url = ""
        self.key = ""

    def start(self) -> None:
        self.env = {
            **os.environ,
            **self.services.start_all(),
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "0",
            "OPENMAAS_DEVSTACK_DIR": str(self.root),
            "PYTHONPATH": str(ROOT),
        }
        self.stub_url = self._start_stub()
        say("migrating the database")
        self._python(["manage.py", "migrate", "--noinput"])
        self.key = (
            self._python(
                ["-c", "from tests.bench.gateway import seed_main; seed_main()", self.stub_url]
            )
            .strip()
            .splitlines()[-1]
        )

    def _python(self, argv: Sequence[str]) -> str:
        done = subprocess.run(
            [sys.executable, *argv],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _start_stub(self) -> str:
        port = free_port()
        log = self.root / "logs" / "stub.log"
        proc = spawn(
            [sys.executable, "-m", "tests.bench.stub_engine", "--port", str(port)],
            log=log,
            env=self.env,
            cwd=ROOT,
        )
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: http(url + "/health")[0] == 200,
            timeout_s=30,
            what="stub engine",
            proc=proc,
            log=log,
        )
        say(f"stub engine on {url}")
        return url

    @contextmanager
    def gateway(self, workers: int) -> Iterator[tuple[str, int]]:
        """The web process with ``workers`` workers, for the duration of the block: its
        URL and pid (with one worker, the pid of the process that serves)."""
        port = free_port()
        log = self.root / "logs" / f"gateway-{workers}w.log"
        argv = [
            sys.executable,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        proc = spawn(argv, log=log, env=self.env, cwd=ROOT)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: self._gateway_ready(url, workers),
                timeout_s=90,
                what="gateway",
                proc=proc,
                log=log,
            )
            check_relay(url, self.key)
            say(f"gateway ({workers} worker{'s' * (workers > 1)}) on {url}")
            yield url, proc.pid
        finally:
            stop(proc)
            self.procs.remove(proc)

    def _gateway_ready(self, url: str, workers: int) -> bool:
        # Several answers in a row, so that every worker has started and loaded its routes.
        return all(http(url + "/v1/models", key=self.key)[0] == 200 for _ in range(4 * workers))

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        self.services.stop_all()


def check_relay(url: str, key: str) -> None:
    """Both request kinds must reach the stub through the gateway before we measure."""
    for stream in (False, True):
        status, body = http(url + PATH, key=key, body=request_body(stream))
        expected = b"data: [DONE]" if stream else b"Hello from the stub."
        if status != 200 or expected not in body:
            raise RuntimeError(f"gateway relay check failed ({status}): {body[:300]!r}")


# --- wrk --------------------------------------------------------------------------------


def write_scripts(folder: Path, key: str) -> dict[bool, Path]:
    scripts = {}
    for stream in (False, True):
        path = folder / f"post-{'stream' if stream else 'plain'}.lua"
        path.write_text(LUA % {"body": request_body(stream), "key": key, "mark": MARK})
        scripts[stream] = path
    return scripts


def run_wrk(url: str, script: Path, clients: int, threads: int, seconds: int) -> dict[str, Any]:
    argv = [
        "wrk",
        f"-t{min(threads, clients)}",
        f"-c{clients}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url + PATH,
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK) :]))
    raise RuntimeError(f"wrk gave no result ({done.returncode}):\n{done.stdout}{done.stderr}")


@dataclass
class Plan:
    seconds: int
    warmup: int
    threads: int
    clients: list[int]


def measure(target: str, url: str, scripts: dict[bool, Path], plan: Plan) -> list[Cell]:
    cells = []
    for stream in (False, True):
        for clients in plan.clients:
            if plan.warmup > 0:
                run_wrk(url, scripts[stream], clients, plan.threads, plan.warmup)
            raw = run_wrk(url, scripts[stream], clients, plan.threads, plan.seconds)
            cell = Cell.from_wrk(target, stream, clients, raw)
            say(
                f"{target:<22} stream={stream!s:<5} clients={clients:<3} "
                f"{cell.rps:8.0f} req/s  p50 {cell.p50_ms:6.2f} ms  "
                f"p99 {cell.p99_ms:6.2f} ms  errors {cell.errors}"
            )
            cells.append(cell)
    return cells


# --- profiling ------------------------------------------------------------------------

# Which component a sample's innermost recognised frame belongs to.
COMPONENTS = (
    ("redis/", "auth: redis-py (GET of the cached grant)"),
    ("services/keys.py", "auth: resolve_grant, KeyGrant.loads"),
    ("aiohttp/", "relay: aiohttp client (request to the engine)"),
    ("uvicorn/protocols", "uvicorn: HTTP parsing, ASGI send (socket writes)"),
    ("uvicorn/middleware", "uvicorn: proxy-headers middleware"),
    ("validation.py", "validate_body"),
    ("compute/routing.py", "routing table"),
    ("gateway/app.py", "gateway app.py (own frames)"),
    ("portal/asgi.py", "portal.asgi dispatch"),
)


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def profile(pid: int, url: str, script: Path, plan: Plan, folder: Path) -> None:
    """Sample the gateway while wrk loads it; save raw stacks and a summary."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "gateway-py-spy.txt"
    argv = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--nonblocking",
        "--duration",
        str(plan.seconds),
        "--format",
        "raw",
        "--output",
        str(raw),
    ]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = run_wrk(url, script, max(plan.clients), plan.threads, plan.seconds)
        spy.wait(timeout=60)
    finally:
        if spy.poll() is None:
            spy.kill()
    rps = result["requests"] / (result["duration_us"] / 1e6)
    lines = [
        f"gateway (1 worker), {max(plan.clients)} clients, not streamed, under py-spy: "
        f"{rps:,.0f} req/s",
        *summarize(raw),
    ]
    (folder / "gateway-summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def summarize(raw: Path) -> list[str]:
    """Share of the event-loop thread's busy samples per component."""
    shares: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "threading.py" in stack:
            continue  # the sync_to_async executor thread is counted apart from the loop
        frames = stack.split(";")
        name = next(
            (label for frame in reversed(frames) for key, label in COMPONENTS if key in frame),
            "event loop (uvloop, task steps) and the rest",
        )
        shares[name] = shares.get(name, 0) + int(count)
    total = sum(shares.values()) or 1
    return [
        f"  {n / total:6.1%}  {name}" for name, n in sorted(shares.items(), key=lambda kv: -kv[1])
    ]


# --- the report -------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"


def load_average() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    return (done.stdout + done.stderr).split("Copyright")[0].strip()


def _ms(value: float) -> str:
    return f"{value:.2f}"


def table(cells: list[Cell]) -> list[str]:
    direct = {(c.stream, c.clients): c for c in cells if c.target == "direct"}
    lines = [
        "| path | stream | clients | req/s | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        base = direct.get((c.stream, c.clients))
        added = (
            ("–", "–")
            if c.target == "direct" or base is None
            else (_ms(c.p50_ms - base.p50_ms), _ms(c.p99_ms - base.p99_ms))
        )
        lines.append(
            f"| {c.target} | {'yes' if c.stream else 'no'} | {c.clients} "
            f"| {c.rps:,.0f} | {_ms(c.p50_ms)} | {_ms(c.p99_ms)} "
            f"| {added[0]} | {added[1]} | {c.errors} |"
        )
    return lines


def aims(cells: list[Cell]) -> list[str]:
    direct = {(c.stream, c.clients): c for c in cells if c.target == "direct"}
    lines = []
    for c in cells:
        if c.target == "direct" or c.stream:
            continue
        if c.clients == max(x.clients for x in cells):
            verdict = "met" if c.rps >= AIM_RPS else "missed"
            lines.append(
                f"- {c.target}, {c.clients} clients, not streamed: {c.rps:,.0f} req/s "
                f"(aim ≥ {AIM_RPS}: {verdict})"
            )
        if c.clients == 1 and (False, 1) in direct:
            added = c.p50_ms - direct[(False, 1)].p50_ms
            verdict = "met" if added <= AIM_ADDED_P50_MS else "missed"
            lines.append(
                f"- {c.target}, 1 client, not streamed: p50 added {added:.2f} ms "
                f"(aim ≤ {AIM_ADDED_P50_MS:g} ms: {verdict})"
            )
    return lines


def render(cells: list[Cell], plan: Plan, workers: list[int], load_before: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = [
        HEADING,
        "",
        f"Measured {when} on {os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, {wrk_version()}. "
        f"Load average (1/5/15 min) before the run: {load_before}; after: {load_average()} "
        "(anything above ~0.5 before the run means other work shared the CPUs: "
        "expect noisier numbers, the tails most).",
        "",
        f"`POST {PATH}` with a small chat body and `Authorization: Bearer sk-…`, "
        "on loopback, against a stub engine that answers at once "
        "(`tests/bench/stub_engine.py`: a fixed JSON body, or 5 SSE chunks + "
        "`data: [DONE]` when streamed). *direct* is wrk → stub; *gateway* is wrk → "
        "uvicorn (`portal.asgi`, `--loop uvloop --http httptools --no-access-log`, "
        f"workers: {', '.join(map(str, workers))}) → stub, with the real key "
        "authentication (1 s per-process memo, then Redis, then PostgreSQL) and routing "
        "(database, refreshed in the background) in the path. "
        f"wrk {plan.threads} thread(s), closed loop, {plan.warmup:g} s warm-up then "
        f"{plan.seconds:g} s measured per row; latency is to the last byte (the whole "
        "stream when streamed). The load generator, the gateway, the stub, Redis and "
        "PostgreSQL share the same CPUs. Added latency = gateway − direct at the same "
        "stream/clients; at 64 clients the servers are saturated, so latency there is "
        "mostly queueing (≈ clients ÷ req/s). errors = socket errors + non-2xx answers.",
        "",
    ]
    return "\n".join([*head, *table(cells), "", *aims(cells), ""])


def write_section(path: Path, section: str) -> None:
    """Replace the section under HEADING (to the next ``## `` heading), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == HEADING), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:])
        new = (before + "\n\n" if before else "") + section + ("\n" + after if after else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new.rstrip("\n") + "\n")


# --- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the gateway against a stub engine.")
    parser.add_argument("--output", type=Path, help="markdown file whose section to replace")
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per row")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per row (0: none)")
    parser.add_argument("--clients", default="1,64", help="comma-separated client counts")
    parser.add_argument("--workers", default="1,2", help="gateway worker counts to measure")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also sample the 1-worker gateway with py-spy (pip install "
        "py-spy) under the largest client count, not streamed; write "
        "the raw stacks and a summary by component to DIR",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, root: Path) -> list[Cell]:
    plan = Plan(args.seconds, args.warmup, args.threads, [int(n) for n in args.clients.split(",")])
    stack = Stack(root)
    try:
        stack.start()
        scripts = write_scripts(root, stack.key)
        cells = measure("direct", stack.stub_url, scripts, plan)
        for workers in [int(n) for n in args.workers.split(",")]:
            with stack.gateway(workers) as (url, pid):
                cells += measure(
                    f"gateway ({workers} worker{'s' * (workers > 1)})", url, scripts, plan
                )
                if args.profile is not None and workers == 1:
                    profile(pid, url, scripts[False], plan, args.profile)
        return cells
    finally:
        stack.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    # Ctrl-C and SIGTERM both unwind through the cleanup (even if SIGINT was ignored by
    # whoever started us, as a background job's is).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = load_average()
    root = Path(tempfile.mkdtemp(prefix="openmaas-bench-"))
    try:
        cells = run(args, root)
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    workers = [int(n) for n in args.workers.split(",")]
    plan = Plan(args.seconds, args.warmup, args.threads, [])
    section = render(cells, plan, workers, load_before)
    print("\n" + section)
    if args.output is not None:
        write_section(args.output, section)
        say(f"wrote the section '{HEADING[3:]}' of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
