"""``make bench-gateway``: the gateway's added latency and throughput on loopback, with
limits and metering on and off, beside a LiteLLM proxy, in one run.

Starts the real backing services (PostgreSQL, Redis, SeaweedFS), a stub engine that
answers at once (:mod:`tests.bench.stub_engine`), seeds a user, an API key (with real
per-key limits set high enough never to trip, when the key model has them) and a ready
replica pointing at the stub. Then ``wrk``, in its own process, drives
``POST /v1/chat/completions``, streamed and not, at 1 and 64 clients, at:

- *direct*: the stub itself;
- *gateway, limits on*: the web process (uvicorn, the real ASGI app) with default
  settings, so key authentication, the Redis limiter and the usage stream are in the
  path (1 and 2 workers);
- *gateway, limits off*: the same with ``GATEWAY_LIMITS=0 GATEWAY_METERING=0``;
- *gateway, limits on, request by request*: limits on with ``GATEWAY_LEASE_SHARE=0``,
  so every request asks Redis (the bench key's high limits are otherwise leased, see
  ``portal/limits/leases.py``; keys with the default limits are always checked so);
- *gateway, limits on + inline moderation*: the defaults as shipped, which also put the
  governance filter (``GOVERNANCE_INLINE``, issue 9) in the path; the rows above run
  with it off, so that they compare limits and metering alone, as LiteLLM (which has no
  moderation in its path) is compared with them;
- *LiteLLM proxy*: :mod:`tests.bench.litellm_proxy` (its own virtual environment, one
  worker, offline) routing one model to the same stub.

Each cell gets a warm-up and a bounded measured run. The results go into a dated
section of the output file (older sections are kept); every process is stopped at the
end, on error and on Ctrl-C.

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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from compute.agent.procs import free_port, spawn, stop, wait_for
from portal.devstack.services import BackingServices
from portal.gateway.server import HTTP_PROTOCOL
from tests.bench import litellm_proxy

ROOT = Path(__file__).resolve().parents[2]
TITLE = "# Benchmarks"
HEADING = "## Gateway with limits and metering, beside LiteLLM (make bench-gateway, {date})"
PATH = "/v1/chat/completions"
SERVED_NAME = "bench/stub"
MARK = "BENCH_JSON "
AIM_RATIO = 40.0  # gateway (limits on) req/s ÷ LiteLLM req/s at the largest client count
AIM_ADDED_P50_MS = 1.0  # at 1 client, not streamed, limits on
AIM_LIMITS_COST = 0.15  # limits on may be at most this much below limits off (req/s)
# Per-key limits for the bench key, where the key model has the field: high enough that
# they never trip, so the limiter does its full work on every request and denies none.
KEY_LIMITS = {"rpm_limit": 1_000_000_000, "tpm_limit": 1_000_000_000, "max_concurrent": 10_000}
SWITCHES = ("GATEWAY_LIMITS", "GATEWAY_METERING")
# ``taskset`` prefix for the 1-worker proxies (the gateway's and LiteLLM's worker), set by
# :func:`pin_cpus`; everything else then runs on the other CPUs.
PROXY_CPU: list[str] = []
INLINE = "GOVERNANCE_INLINE"
LEASE_SHARE = "GATEWAY_LEASE_SHARE"
DIRECT = "direct"
PRELIMINARY = "**Preliminary**"
LITELLM = "LiteLLM proxy (1 worker)"

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


@dataclass
class Facts:
    """What the run checked besides the numbers, for the report."""

    key_limits: dict[str, int] = field(default_factory=dict)
    ratelimit_header: dict[str, str] = field(default_factory=dict)  # target → header
    metered: dict[str, tuple[int, int]] = field(default_factory=dict)  # target → events, sent
    litellm_version: str = ""
    litellm_error: str = ""
    outbound_attempts: list[str] = field(default_factory=list)
    pinning: str = ""

    def in_path(self, target: str) -> str:
        """Why limits and metering were not seen in ``target``'s path ("" if they were)."""
        missing = []
        if target not in self.ratelimit_header:
            missing.append("no x-ratelimit headers")
        if self.metered.get(target, (0, 0))[0] == 0:
            missing.append("no usage events")
        return ", ".join(missing)


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- the stack --------------------------------------------------------------------------


def request_body(stream: bool, model: str = SERVED_NAME) -> str:
    return json.dumps(
        {
            "model": model,
            "max_tokens": 8,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    )


def http_full(
    url: str, *, key: str = "", body: str | None = None, timeout: float = 5
) -> tuple[int, dict[str, str], bytes]:
    """One request with the standard library: status, headers (lower-case names) and
    body, errors included."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            got = {k.lower(): v for k, v in resp.headers.items()}
            return int(resp.status), got, bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), {k.lower(): v for k, v in exc.headers.items()}, bytes(exc.read())


def http(
    url: str, *, key: str = "", body: str | None = None, timeout: float = 5
) -> tuple[int, bytes]:
    """One request with the standard library; the status and body (errors included)."""
    status, _, data = http_full(url, key=key, body=body, timeout=timeout)
    return status, data


def seed_main() -> None:
    """Run in a child with the stack's environment: seed, then print the raw API key and
    the limits set on it as one JSON line."""
    import django

    django.setup()
    raw, limits = seed(sys.argv[1])
    print(json.dumps({"key": raw, "limits": limits}))


def seed(stub_url: str) -> tuple[str, dict[str, int]]:
    """A user and key, a public repo and version, a ready node, deployment and replica."""
    from django.contrib.auth import get_user_model

    from compute.models import Deployment, Node, NodeStatus, Replica, ReplicaStatus
    from portal.models import ModelRepo, ModelVersion
    from portal.models.ownership import Visibility
    from portal.services.keys import create_api_key

    user = get_user_model().objects.create_user(username="bench", password="bench-pw-1")
    key, raw = create_api_key(user, name="bench")
    names = {f.name for f in type(key)._meta.get_fields()}
    limits = {name: value for name, value in KEY_LIMITS.items() if name in names}
    if limits:
        for name, value in limits.items():
            setattr(key, name, value)
        key.save(update_fields=list(limits))
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
    return raw, limits


class Stack:
    """The processes of one run; :meth:`close` stops whatever was started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.services = BackingServices(root, durable=False, say=say)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}
        self.stub_url = ""
        self.key = ""
        self.key_limits: dict[str, int] = {}

    def start(self) -> None:
        base = {k: v for k, v in os.environ.items() if k not in (*SWITCHES, INLINE)}
        self.env = {
            **base,
            **self.services.start_all(),
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DEBUG": "0",
            "OPENMAAS_DEVSTACK_DIR": str(self.root),
            "PYTHONPATH": str(ROOT),
        }
        self.stub_url = self._start_stub()
        say("migrating the database")
        self._python(["manage.py", "migrate", "--noinput"])
        seeded = json.loads(
            self._python(
                ["-c", "from tests.bench.gateway import seed_main; seed_main()", self.stub_url]
            )
            .strip()
            .splitlines()[-1]
        )
        self.key, self.key_limits = seeded["key"], seeded["limits"]
        say(f"key limits set: {self.key_limits or 'none (the key model has no limit fields)'}")

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
    def gateway(
        self, workers: int, limits: bool, inline: bool = False, leases: bool = True
    ) -> Iterator[tuple[str, int, dict[str, str]]]:
        """The web process with ``workers`` workers, limits and metering on (default
        settings) or off, and the inline moderation filter on or off, for the duration
        of the block: its URL, pid (with one worker, the pid of the process that serves)
        and the headers of a checked answer."""
        port = free_port()
        tag = ("on" if limits else "off") + ("-inline" if inline else "")
        tag += "" if leases else "-exact"
        log = self.root / "logs" / f"gateway-{workers}w-{tag}.log"
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
            HTTP_PROTOCOL,
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        env = dict(self.env) if limits else {**self.env, **{name: "0" for name in SWITCHES}}
        env[INLINE] = "1" if inline else "0"
        if not leases:
            env[LEASE_SHARE] = "0"
        if workers == 1:
            argv = [*PROXY_CPU, *argv]
        proc = spawn(argv, log=log, env=env, cwd=ROOT)
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
            headers = check_relay(url, self.key, SERVED_NAME, "gateway")
            if inline:
                # The filter's classifier loads in the background after the first
                # request: answers for a few seconds so that it is in before measuring.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    check_relay(url, self.key, SERVED_NAME, "gateway")
            say(f"gateway ({workers} worker{'s' * (workers > 1)}, limits {tag}) on {url}")
            yield url, proc.pid, headers
        finally:
            stop(proc)
            self.procs.remove(proc)

    def _gateway_ready(self, url: str, workers: int) -> bool:
        # Several answers in a row, so that every worker has started and loaded its routes.
        return all(http(url + "/v1/models", key=self.key)[0] == 200 for _ in range(4 * workers))

    def usage_events(self, *, clear: bool = False) -> int:
        """How many usage events the usage stream holds (nothing consumes it here; an
        entry holds a batch of them); with ``clear``, empty it instead (0), so that it
        never reaches its length cap (``GATEWAY_USAGE_STREAM_MAXLEN``)."""
        import redis

        from compute.metering import STREAM, unpack

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            if clear:
                client.delete(STREAM)
                return 0
            count, after = 0, "-"
            while entries := client.xrange(STREAM, after, "+", count=1000):
                count += sum(len(unpack(fields)) for _, fields in entries)
                after = b"(" + entries[-1][0]
            return count
        finally:
            client.close()

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        self.procs.clear()
        self.services.stop_all()


def check_relay(url: str, key: str, model: str, what: str, timeout: float = 5) -> dict[str, str]:
    """Both request kinds must reach the stub through ``url`` before we measure; the
    headers of the non-streamed answer."""
    headers: dict[str, str] = {}
    for stream in (False, True):
        try:
            status, got, body = http_full(
                url + PATH, key=key, body=request_body(stream, model), timeout=timeout
            )
        except OSError as exc:
            raise RuntimeError(f"{what} relay check failed: {exc!r}") from exc
        expected = b"data: [DONE]" if stream else b"Hello from the stub."
        if status != 200 or expected not in body:
            raise RuntimeError(f"{what} relay check failed ({status}): {body[:300]!r}")
        if not stream:
            headers = got
    return headers


def litellm_ready(url: str) -> bool:
    try:
        return http(url + "/v1/models", key=litellm_proxy.MASTER_KEY, timeout=2)[0] == 200
    except OSError:
        return False


# --- wrk --------------------------------------------------------------------------------


def write_scripts(folder: Path, key: str, model: str, tag: str) -> dict[bool, Path]:
    scripts = {}
    for stream in (False, True):
        path = folder / f"post-{tag}-{'stream' if stream else 'plain'}.lua"
        path.write_text(LUA % {"body": request_body(stream, model), "key": key, "mark": MARK})
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
    rounds: int = 1


@dataclass
class Target:
    """One server to measure: its name in the report, URL and wrk scripts."""

    name: str
    url: str
    scripts: dict[bool, Path]


def settled(read: Callable[[], int], every_s: float = 0.05, timeout_s: float = 2.0) -> int:
    """``read()`` once two reads ``every_s`` apart agree (the last answers' usage events
    have landed), or its last value at the deadline."""
    last = read()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(every_s)
        now = read()
        if now == last:
            return now
        last = now
    return last


def measure(
    targets: list[Target], plan: Plan, events: Callable[..., int] = lambda clear=False: 0
) -> tuple[list[Cell], dict[str, tuple[int, int]]]:
    """Every cell of every target, in ``plan.rounds`` rounds that take the targets in
    turn (in reverse order every other round), so that a change in the machine's load
    falls on all of them alike; a cell's numbers are the medians of its rounds (errors:
    the sum). Also, per target, the usage events published during its runs (``events``
    counts the stream's events; ``events(clear=True)`` empties it) and the requests
    sent, warm-ups included."""
    counts = {t.name: [0, 0] for t in targets}
    cells = []
    for stream in (False, True):
        for clients in plan.clients:
            runs: dict[str, list[Cell]] = {t.name: [] for t in targets}
            for turn in range(plan.rounds):
                for target in targets if turn % 2 == 0 else targets[::-1]:
                    events(clear=True)  # earlier runs' events were counted: start from none
                    seconds = [plan.warmup] if turn == 0 and plan.warmup > 0 else []
                    for duration in [*seconds, plan.seconds]:
                        raw = run_wrk(
                            target.url, target.scripts[stream], clients, plan.threads, duration
                        )
                        counts[target.name][1] += raw["requests"]
                    counts[target.name][0] += settled(events)
                    runs[target.name].append(Cell.from_wrk(target.name, stream, clients, raw))
            for target in targets:
                cell = median_cell(runs[target.name])
                say(
                    f"{target.name:<32} stream={stream!s:<5} clients={clients:<3} "
                    f"{cell.rps:8.0f} req/s  p50 {cell.p50_ms:7.2f} ms  "
                    f"p99 {cell.p99_ms:7.2f} ms  errors {cell.errors}"
                    + (f"  (median of {plan.rounds})" if plan.rounds > 1 else "")
                )
                cells.append(cell)
    order = {t.name: i for i, t in enumerate(targets)}
    cells.sort(key=lambda c: order[c.target])  # stable: each target's cells in run order
    return cells, {name: (n[0], n[1]) for name, n in counts.items()}


def median_cell(runs: list[Cell]) -> Cell:
    """One cell from several runs of it: median req/s, p50 and p99; errors summed."""
    first = runs[0]
    return Cell(
        first.target,
        first.stream,
        first.clients,
        statistics.median(c.rps for c in runs),
        statistics.median(c.p50_ms for c in runs),
        statistics.median(c.p99_ms for c in runs),
        sum(c.errors for c in runs),
    )


# --- profiling ------------------------------------------------------------------------

# Which component a sample's innermost recognised frame belongs to.
COMPONENTS = (
    ("redis/", "redis-py"),
    ("services/keys.py", "auth: resolve_grant, KeyGrant.loads"),
    ("aiohttp/", "relay: aiohttp client (request to the engine)"),
    ("uvicorn/protocols", "uvicorn: HTTP parsing, ASGI send (socket writes)"),
    ("uvicorn/middleware", "uvicorn: proxy-headers middleware"),
    ("validation.py", "validate_body"),
    ("compute/routing.py", "routing table"),
    ("limits", "limits: Redis limiter"),
    ("metering", "metering: usage event, metrics"),
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
        f"gateway (1 worker, limits on), {max(plan.clients)} clients, not streamed, "
        f"under py-spy: "
        f"{rps:,.0f} req/s",
        *summarize(raw),
    ]
    (folder / "gateway-summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def component(frames: list[str]) -> str:
    """The component of a sample's innermost recognised frame; redis-py's time goes to
    the project function that called it (grant look-up, limiter, usage publishing)."""
    name = next(
        (label for frame in reversed(frames) for key, label in COMPONENTS if key in frame),
        "event loop (uvloop, task steps) and the rest",
    )
    if name != "redis-py":
        return name
    caller = next(
        (f for f in reversed(frames) if f.startswith(("portal/", "compute/"), f.find("(") + 1)),
        "",
    )
    if not caller:
        return "redis-py (reading replies, from the event loop)"
    function, _, where = caller.partition(" (")
    return f"redis-py, called from {function} ({where.split(':')[0]})"


def summarize(raw: Path) -> list[str]:
    """Share of the event-loop thread's busy samples per component."""
    shares: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "threading.py" in stack:
            continue  # the sync_to_async executor thread is counted apart from the loop
        name = component(stack.split(";"))
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


def memory_gib() -> str:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return "unknown"
    found = re.search(r"^MemTotal:\s*(\d+) kB", text, re.MULTILINE)
    return f"{int(found.group(1)) / 2**20:.0f} GiB" if found else "unknown"


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


def _cells(cells: list[Cell]) -> dict[tuple[str, bool, int], Cell]:
    return {(c.target, c.stream, c.clients): c for c in cells}


def table(cells: list[Cell]) -> list[str]:
    direct = {(c.stream, c.clients): c for c in cells if c.target == DIRECT}
    lines = [
        "| path | stream | clients | req/s | p50 ms | p99 ms "
        "| added p50 ms | added p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in cells:
        base = direct.get((c.stream, c.clients))
        added = (
            ("–", "–")
            if c.target == DIRECT or base is None
            else (_ms(c.p50_ms - base.p50_ms), _ms(c.p99_ms - base.p99_ms))
        )
        lines.append(
            f"| {c.target} | {'yes' if c.stream else 'no'} | {c.clients} "
            f"| {c.rps:,.0f} | {_ms(c.p50_ms)} | {_ms(c.p99_ms)} "
            f"| {added[0]} | {added[1]} | {c.errors} |"
        )
    return lines


def summary(cells: list[Cell]) -> list[str]:
    """One row per target: req/s at the most clients, added latency at the fewest."""
    by = _cells(cells)
    most = max(c.clients for c in cells)
    least = min(c.clients for c in cells)
    lines = [
        f"| path | req/s, {most} clients | req/s, {most} clients, streamed "
        f"| added p50 / p99 ms, {least} client | added p50 / p99 ms, {least} client, streamed |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for target in dict.fromkeys(c.target for c in cells):
        row = [target]
        for stream in (False, True):
            cell = by.get((target, stream, most))
            row.append(f"{cell.rps:,.0f}" if cell else "–")
        for stream in (False, True):
            cell, base = by.get((target, stream, least)), by.get((DIRECT, stream, least))
            if cell is None or base is None or target == DIRECT:
                row.append("–")
            else:
                row.append(f"{cell.p50_ms - base.p50_ms:.2f} / {cell.p99_ms - base.p99_ms:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def added_p50_line(
    by: dict[tuple[str, bool, int], Cell],
    on: str,
    off: str,
    stream: bool,
    clients: int,
    compare: str = "limits off",
) -> str:
    base = by[(DIRECT, stream, clients)]
    added = by[(on, stream, clients)].p50_ms - base.p50_ms
    notes = []
    if not stream and compare == "limits off":
        notes.append(f"aim ≤ {AIM_ADDED_P50_MS:g} ms: {_verdict(added <= AIM_ADDED_P50_MS)}")
    for name, label in ((off, compare), (LITELLM, "LiteLLM")):
        other = by.get((name, stream, clients))
        if other is not None:
            notes.append(f"{label} {other.p50_ms - base.p50_ms:+.2f} ms")
    kind = "streamed" if stream else "not streamed"
    return f"- {on}, added p50 at {clients} client, {kind}: {added:+.2f} ms ({'; '.join(notes)})"


def aims(cells: list[Cell], on: str, off: str, facts: Facts) -> list[str]:
    """The issue's three aims, for the 1-worker gateway with limits on."""
    by = _cells(cells)
    most = max(c.clients for c in cells)
    least = min(c.clients for c in cells)
    lines = []
    for stream in (False, True):
        kind = "streamed" if stream else "not streamed"
        gw, lite = by.get((on, stream, most)), by.get((LITELLM, stream, most))
        if gw and lite and lite.rps > 0:
            ratio = gw.rps / lite.rps
            lines.append(
                f"- {on} ÷ LiteLLM, req/s at {most} clients, {kind}: {ratio:,.1f}× "
                f"({gw.rps:,.0f} ÷ {lite.rps:,.0f}; aim ≥ {AIM_RATIO:g}×: "
                f"{_verdict(ratio >= AIM_RATIO)})"
            )
        cell, base = by.get((on, stream, least)), by.get((DIRECT, stream, least))
        if cell and base:
            lines.append(added_p50_line(by, on, off, stream, least))
        with_, without = by.get((on, stream, most)), by.get((off, stream, most))
        if with_ and without and without.rps > 0:
            cost = 1 - with_.rps / without.rps
            lines.append(
                f"- limits and metering on vs off, req/s at {most} clients, {kind}: "
                f"{with_.rps:,.0f} vs {without.rps:,.0f}, on is {abs(cost):.1%} "
                f"{'below' if cost >= 0 else 'above'} off "
                f"(aim ≤ {AIM_LIMITS_COST:.0%} slower: {_verdict(cost <= AIM_LIMITS_COST)})"
                + (f"; not valid: {facts.in_path(on)} with limits on" if facts.in_path(on) else "")
            )
    moderated = gateway_name(1, True, inline=True)
    for stream in (False, True):
        kind = "streamed" if stream else "not streamed"
        gw, lite = by.get((moderated, stream, most)), by.get((LITELLM, stream, most))
        plain = by.get((on, stream, most))
        if gw and plain and plain.rps > 0:
            share = f"; {gw.rps / lite.rps:,.1f}× LiteLLM" if lite and lite.rps > 0 else ""
            lines.append(
                f"- {moderated}, req/s at {most} clients, {kind}: {gw.rps:,.0f} "
                f"({1 - gw.rps / plain.rps:.1%} below limits on without it{share})"
            )
        if by.get((moderated, stream, least)) and by.get((DIRECT, stream, least)):
            lines.append(added_p50_line(by, moderated, on, stream, least, compare="without"))
    exact = gateway_name(1, True, leases=False)
    for stream in (False, True):
        kind = "streamed" if stream else "not streamed"
        gw, without = by.get((exact, stream, most)), by.get((off, stream, most))
        if gw and without and without.rps > 0:
            lines.append(
                f"- {exact}, req/s at {most} clients, {kind}: {gw.rps:,.0f} "
                f"({1 - gw.rps / without.rps:.1%} below limits off)"
            )
        if by.get((exact, stream, least)) and by.get((DIRECT, stream, least)):
            lines.append(added_p50_line(by, exact, on, stream, least, compare="leased"))
    return lines


def facts_lines(facts: Facts, on: str, off: str) -> list[str]:
    lines = []
    limits = ", ".join(f"`{k}` = {v:,}" for k, v in facts.key_limits.items())
    lines.append(
        f"- The bench key's limits: {limits} (never reached, so no request is denied)."
        if limits
        else "- The key model has no per-key limit fields on this branch: only the defaults "
        "(budgets, if any) were in force."
    )
    lines.append(
        "- Leases: with the default `GATEWAY_LEASE_SHARE` (600) the bench key's limits are "
        "leased (`portal/limits/leases.py`): a gateway process takes 1/600 of its request "
        "and token buckets and the concurrency slots its requests in flight need (at most "
        "128) in one Redis call, admits requests against that locally, and tops it up "
        "every second; *request by request* "
        "is the same gateway with `GATEWAY_LEASE_SHARE=0`, how keys with the default "
        "limits (600 requests per minute) are always checked."
    )
    for target in (on, off):
        header = facts.ratelimit_header.get(target)
        lines.append(
            f"- {target}: `x-ratelimit-limit-requests` "
            + (f"= {header} on a checked answer." if header else "absent on a checked answer.")
        )
    if facts.in_path(on):
        lines.append(
            f"- **Warning**: limits and metering were not seen in the path of {on} "
            f"({facts.in_path(on)}): this branch does not have them yet, so *on* and *off* "
            "measure the same code."
        )
    for target, (events, sent) in facts.metered.items():
        lines.append(
            f"- {target}: {events:,} usage events published to the Redis stream for "
            f"{sent:,} completed requests (warm-ups included; nothing consumed the stream)."
        )
    if facts.litellm_error:
        lines.append(f"- LiteLLM was not measured: {facts.litellm_error}")
    else:
        attempts = "; ".join(facts.outbound_attempts) or "none"
        lines.append(
            f"- LiteLLM {facts.litellm_version}: a checked answer through it carried the "
            f"stub's body; outbound attempts caught by the proxy trap: {attempts}."
        )
    return lines


def render(
    cells: list[Cell], plan: Plan, workers: list[int], load_before: str, facts: Facts
) -> str:
    now = datetime.now(UTC)
    on, off = gateway_name(workers[0], True), gateway_name(1, False)
    preliminary = plan.seconds < 10 or _load1(load_before) > 0.5
    head = [
        HEADING.format(date=now.strftime("%Y-%m-%d")),
        "",
    ]
    if preliminary:
        head += [
            f"{PRELIMINARY} ({plan.seconds} s per row, load {load_before} before the run): "
            "measured while other work shared the CPUs, to check the harness; not "
            "representative. Re-run `make bench-gateway` on a quiet machine.",
            "",
        ]
    head += [
        f"Measured {now.strftime('%Y-%m-%d %H:%M UTC')} on {os.cpu_count()} CPUs "
        f"({cpu_model()}), {memory_gib()} memory, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {wrk_version()}, LiteLLM "
        f"{facts.litellm_version or 'not measured'}. Load average (1/5/15 min) before "
        f"the run: {load_before}; after: {load_average()} (anything above ~0.5 before the "
        "run means other work shared the CPUs: expect noisier numbers, the tails most). "
        f"CPUs: {facts.pinning or 'not pinned'}.",
        "",
        f"`POST {PATH}` with a small chat body (`max_tokens` 8) and `Authorization: Bearer "
        "sk-…`, on loopback, against a stub engine that answers at once "
        "(`tests/bench/stub_engine.py`: a fixed JSON body, or 5 SSE chunks + "
        "`data: [DONE]` when streamed, plus a usage chunk when asked for). *direct* is "
        "wrk → stub. *gateway* is wrk → uvicorn (`portal.asgi`, `--loop uvloop --http "
        f"{HTTP_PROTOCOL} --no-access-log`: httptools, writes corked per turn of the event "
        "loop) → stub, with key authentication and routing in the "
        "path; *limits on* is the default settings (the Redis limiter with the key's "
        "limits, and one usage event per request to the Redis stream), *limits off* is "
        "`GATEWAY_LIMITS=0 GATEWAY_METERING=0`; both with `GOVERNANCE_INLINE=0`, so they "
        "compare limits and metering alone (and LiteLLM, which moderates nothing in its "
        "path, with them). *+ inline moderation* is the shipped defaults: limits, "
        "metering and the governance filter (input checked before routing, the answer "
        "checked and labelled, the classifier batched per turn of the event loop). "
        "*LiteLLM* is its proxy "
        "(`tests/bench/litellm_proxy.py`: own virtual environment, `litellm --config … "
        "--host 127.0.0.1 --num_workers 1`, a master key, no database, "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True`, telemetry off, HTTP(S)_PROXY pointed at a "
        "local trap) routing one model (`openai/…`, `api_base` = the stub) to the same stub "
        f"with its default settings. wrk {plan.threads} thread(s), closed loop, "
        f"{plan.warmup:g} s warm-up then {plan.seconds:g} s measured per run; each row is "
        f"the median of {plan.rounds} run(s) (errors: their sum). *direct* and the 1-worker "
        "gateways (limits on, off, on + inline moderation, on request by request) run side "
        "by side and are measured in turn, round after round (the order reversed every "
        "other round), so a change in the machine's load falls on all of them alike; the "
        "others are measured after. Latency is to "
        "the last byte (the whole stream when streamed). The load generator, the stub, "
        "Redis and PostgreSQL share the other CPUs. Added latency = proxy − "
        "direct at the same stream/clients; at 64 clients the servers are saturated, so "
        "latency there is mostly queueing (≈ clients ÷ req/s). errors = socket errors + "
        "non-2xx answers.",
        "",
    ]
    return "\n".join(
        [
            *head,
            *summary(cells),
            "",
            *aims(cells, on, off, facts),
            "",
            *facts_lines(facts, on, off),
            "",
            "All rows:",
            "",
            *table(cells),
            "",
        ]
    )


def _load1(load: str) -> float:
    try:
        return float(load.split("/")[0])
    except ValueError:
        return 0.0


def _sections(lines: list[str]) -> list[tuple[int, int]]:
    """(first, past-last) line of each ``## `` section."""
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")]
    return list(zip(starts, [*starts[1:], len(lines)], strict=False))


def _replaced_by(lines: list[str], section: tuple[int, int], heading: str) -> bool:
    """A section with the same heading, or a preliminary one of this bench from another
    day, gives way to a new one; final measurements of other days stay as history."""
    first, past = section
    if lines[first].strip() == heading:
        return True
    family = HEADING.split("{date}")[0]
    return (
        heading.startswith(family)
        and lines[first].startswith(family)
        and any(line.startswith(PRELIMINARY) for line in lines[first:past])
    )


def write_section(path: Path, section: str) -> None:
    """Put ``section`` before the first section (the newest measurement on top, older
    ones kept), or in place of the one it replaces (see :func:`_replaced_by`)."""
    heading = section.splitlines()[0].strip()
    text = path.read_text() if path.exists() else TITLE + "\n"
    lines = text.splitlines()
    sections = _sections(lines)
    dropped = [sec for sec in sections if _replaced_by(lines, sec, heading)]
    at = dropped[0][0] if dropped else (sections[0][0] if sections else len(lines))
    kept = [i for i in range(len(lines)) if not any(a <= i < b for a, b in dropped)]
    before = "\n".join(lines[i] for i in kept if i < at).rstrip("\n")
    after = "\n".join(lines[i] for i in kept if i >= at).strip("\n")
    new = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n"
    new += "\n" + after + "\n" if after else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --- main -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark the gateway against a stub engine.")
    parser.add_argument("--output", type=Path, help="markdown file to put the section into")
    parser.add_argument(
        "--seconds", "--duration", type=int, default=10, help="measured seconds per row"
    )
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per row (0: none)")
    parser.add_argument("--clients", default="1,64", help="comma-separated client counts")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="gateway worker counts to measure with limits on (the first is also "
        "measured with limits off and compared)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs per row, taken in turn with the other targets measured alongside "
        "(direct, limits on, limits off); the report gives their medians",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not give the 1-worker proxies a CPU of their own (see pin_cpus)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also sample the 1-worker gateway (limits on) with py-spy (pip install "
        "py-spy) under the largest client count, not streamed; write "
        "the raw stacks and a summary by component to DIR",
    )
    return parser.parse_args(argv)


def plan_of(args: argparse.Namespace) -> Plan:
    clients = [int(n) for n in args.clients.split(",")]
    return Plan(args.seconds, args.warmup, args.threads, clients, max(args.rounds, 1))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def gateway_name(workers: int, limits: bool, inline: bool = False, leases: bool = True) -> str:
    moderation = " + inline moderation" if inline else ""
    exact = "" if leases else ", request by request"
    plural = "s" * (workers > 1)
    on = "on" if limits else "off"
    return f"gateway, limits {on}{exact}{moderation} ({workers} worker{plural})"


def measure_gateways(
    stack: Stack, workers: int, both: bool, plan: Plan, args: argparse.Namespace, facts: Facts
) -> list[Cell]:
    """The gateway with ``workers`` workers, limits on and (``both``) off, running side
    by side and measured in turn (see :func:`measure`); *direct* too when ``both``."""
    scripts = write_scripts(stack.root, stack.key, SERVED_NAME, "gateway")
    with ExitStack() as running:
        targets = []
        if both:
            direct = write_scripts(stack.root, stack.key, SERVED_NAME, "direct")
            targets.append(Target(DIRECT, stack.stub_url, direct))
        pid_on = 0
        variants = [(True, False, True)]
        if both:
            variants += [(False, False, True), (True, True, True), (True, False, False)]
        for limits, inline, leases in variants:
            name = gateway_name(workers, limits, inline, leases)
            url, pid, headers = running.enter_context(
                stack.gateway(workers, limits, inline, leases)
            )
            if "x-ratelimit-limit-requests" in headers:
                facts.ratelimit_header[name] = headers["x-ratelimit-limit-requests"]
            pid_on = pid_on or pid
            targets.append(Target(name, url, scripts))
        cells, counts = measure(targets, plan, stack.usage_events)
        facts.metered.update({t.name: counts[t.name] for t in targets if t.name != DIRECT})
        if args.profile is not None and workers == 1:
            on = targets[1] if both else targets[0]
            profile(pid_on, on.url, scripts[False], plan, args.profile)
    return cells


def measure_litellm(stack: Stack, plan: Plan, facts: Facts) -> list[Cell]:
    venv = litellm_proxy.default_venv(ROOT)
    try:
        litellm_proxy.ensure_venv(venv, say)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        facts.litellm_error = str(exc)
        say(f"LiteLLM skipped: {exc}")
        return []
    facts.litellm_version = litellm_proxy.version_of(venv)
    trap = litellm_proxy.ProxyTrap()
    model = litellm_proxy.MODEL
    key = litellm_proxy.MASTER_KEY
    cells: list[Cell] = []
    try:
        with litellm_proxy.litellm_proxy(
            venv, stack.stub_url, stack.root, stack.env, litellm_ready, trap, PROXY_CPU
        ) as url:
            # Its first answers are slow (lazy imports): a generous limit for the check.
            check_relay(url, key, model, "LiteLLM", timeout=60)
            say(f"LiteLLM {facts.litellm_version} on {url}")
            scripts = write_scripts(stack.root, key, model, "litellm")
            cells, _ = measure([Target(LITELLM, url, scripts)], plan)
    except (RuntimeError, OSError) as exc:
        # Keep the gateway's numbers: report why LiteLLM has none.
        facts.litellm_error = str(exc).splitlines()[0]
        say(f"LiteLLM failed: {exc}")
    finally:
        trap.close()
        facts.outbound_attempts = list(trap.attempts)
    return cells


def run(args: argparse.Namespace, root: Path, facts: Facts) -> list[Cell]:
    plan = plan_of(args)
    workers = [int(n) for n in args.workers.split(",")]
    stack = Stack(root)
    try:
        stack.start()
        facts.key_limits = stack.key_limits
        cells = measure_gateways(stack, workers[0], True, plan, args, facts)
        for count in workers[1:]:
            cells += measure_gateways(stack, count, False, plan, args, facts)
        if not args.no_litellm:
            cells += measure_litellm(stack, plan, facts)
        else:
            facts.litellm_error = "skipped (--no-litellm)."
        return cells
    finally:
        stack.close()


def pin_cpus() -> str:
    """Give the 1-worker proxies the last CPU and this process (and so the services, the
    stub and wrk, which it starts) the others, so that a proxy's worker never waits for a
    CPU that the load generator or the stub holds, whatever the rest of the machine does
    meanwhile; the proxies compared are pinned alike. Multi-worker rows are not pinned.
    Returns how, for the report."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return "not pinned (one CPU or no taskset)"
    proxy, rest = cpus[-1], cpus[:-1]
    os.sched_setaffinity(0, rest)
    PROXY_CPU[:] = ["taskset", "-c", str(proxy)]
    return (
        f"1-worker proxies pinned to CPU {proxy}, the load generator, stub, PostgreSQL "
        f"and Redis to CPU{'s' * (len(rest) > 1)} {','.join(map(str, rest))}"
    )


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
    facts = Facts()
    facts.pinning = "not pinned (--no-pin)" if args.no_pin else pin_cpus()
    try:
        cells = run(args, root, facts)
    except KeyboardInterrupt:
        say("interrupted; processes stopped")
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    workers = [int(n) for n in args.workers.split(",")]
    plan = plan_of(args)
    section = render(cells, plan, workers, load_before, facts)
    print("\n" + section)
    if args.output is not None:
        write_section(args.output, section)
        say(f"wrote the section '{section.splitlines()[0][3:]}' of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
