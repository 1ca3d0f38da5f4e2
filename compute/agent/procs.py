"""Process and file helpers shared by the node agent and the launcher (no Django imports).

Every process the node agent (or the launcher, or the test session) starts gets
``PR_SET_PDEATHSIG`` so that killing the parent, even with SIGKILL, leaves no orphans.
The node side imports nothing from Django, Celery or ``portal`` (see the import contracts in
``pyproject.toml``), so these live here and the project wiring (``portal.devstack``) reuses them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

_PR_SET_PDEATHSIG = 1
T = TypeVar("T")


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)
        # Own process group, so a terminal's Ctrl-C reaches only the parent, which
        # then stops children in order.
        os.setpgid(0, 0)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    death_signal: int = signal.SIGTERM,
    stdin: int = subprocess.DEVNULL,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as a child that receives ``death_signal`` when this process dies.

    ``stdin=subprocess.PIPE`` gives the caller the write end (``proc.stdin``): a child that
    reads it sees EOF once the caller closes it or dies, whatever the signal (the death
    signal reaches only the direct child, and only when the spawning thread ends).
    """
    out: IO[Any] | int = subprocess.DEVNULL
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child owns it
    try:
        return subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=stdin,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            user=user,
            preexec_fn=_die_with_parent(death_signal),
        )
    finally:
        if not isinstance(out, int):
            out.close()


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace_s: float = 10) -> None:
    """Signal ``proc`` (and its process group), wait up to ``grace_s``, then kill it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for(
    check: Callable[[], T],
    *,
    timeout_s: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval_s: float = 0.2,
    ignore: tuple[type[Exception], ...] = (Exception,),
) -> T:
    """Poll ``check`` until it returns something truthy, and return that.

    Exceptions in ``ignore`` count as "not yet" (a server still starting); a dead
    ``proc`` or the deadline raises, with the tail of ``log``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}{_tail(log)}")
        try:
            value = check()
        except ignore:
            value = None
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"{what} was not ready within {timeout_s:.0f}s{_tail(log)}")


def _tail(log: Path | None, lines: int = 20) -> str:
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n--- last lines of " + str(log) + " ---\n" + "\n".join(text)


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
