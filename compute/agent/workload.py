"""One workload on this node (a fine-tuning run, say): fetch its inputs, run its entry, watch it.

A workload is one attempt of a portal ``Workload`` row, keyed by ``(id, attempt)``; unlike a
replica it is never restarted here: a failure is reported and the portal decides (it requeues
with a new attempt, which replaces this one). The entry runs as
``python -m <entry> --spec <spec.json>`` with its bearer token in the environment only and
stdin a pipe this agent holds: the child reads EOF when the agent goes away, however it dies.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compute.agent.files import ModelCache, fetch_files
from compute.agent.procs import spawn, stop
from compute.agent.replica import SECRET_ENV, Launch

logger = logging.getLogger("compute.agent")

# Python modules a portal may ask this node to run. Anything else is refused, so a portal
# (or whoever holds its database) cannot run arbitrary code here through a workload row.
WORKLOAD_ENTRIES = frozenset({"training.runner"})
STOP_GRACE_S = 10.0
ERROR_TAIL = 4000


@dataclass(frozen=True)
class WorkloadPaths:
    """Where one attempt lives on disk (its log outlives it, next to the replicas' logs)."""

    root: Path
    log: Path

    @property
    def files(self) -> Path:
        return self.root / "files"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def spec(self) -> Path:
        return self.root / "spec.json"


def workload_launch(
    desired: Mapping[str, Any],
    spec_path: Path,
    base_env: Mapping[str, str],
    python: str = sys.executable,
) -> Launch:
    """The command and environment of a workload's entry (a pure function of its inputs).

    The token goes in ``OPENMAAS_RUN_TOKEN`` (argv is world-readable in ``ps``); the child
    sees exactly its assigned GPUs (``CUDA_VISIBLE_DEVICES`` empty for a CPU workload) and
    none of the agent's own secrets. ``nproc > 1`` runs the entry under torchrun
    (``--standalone``: each run picks its own rendezvous port, so two can share a node).
    """
    entry = str(desired["entry"])
    nproc = int(desired.get("nproc") or 1)
    if nproc > 1:
        argv = [python, "-m", "torch.distributed.run", "--standalone"]
        argv += [f"--nproc_per_node={nproc}", "-m", entry, "--spec", str(spec_path)]
    else:
        argv = [python, "-m", entry, "--spec", str(spec_path)]
    env = {k: v for k, v in base_env.items() if k not in SECRET_ENV}
    env["OPENMAAS_RUN_TOKEN"] = str(desired["token"])
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(int(i)) for i in desired.get("gpu_indices") or [])
    return Launch(argv, env)


class LocalWorkload:
    """Drives one attempt: fetching → running → succeeded | failed; stopped when unwanted.

    :meth:`step` runs on the agent's loop thread (the child is spawned there, so its death
    signal is tied to a thread that lives as long as the agent); downloads run on the pool.
    """

    def __init__(
        self,
        desired: dict[str, Any],
        *,
        cache: ModelCache,
        pool: ThreadPoolExecutor,
        work_dir: Path,
        portal: str,
        entries: Collection[str] = WORKLOAD_ENTRIES,
    ) -> None:
        self.id: int = int(desired["id"])
        self.attempt: int = int(desired["attempt"])
        self.desired = desired
        self.cache, self.pool, self.portal = cache, pool, portal
        name = f"{self.id}-{self.attempt}"
        self.paths = WorkloadPaths(
            work_dir / "workloads" / name, work_dir / "logs" / f"workload-{name}.log"
        )
        self.status = "fetching"
        self.error = ""
        self.exit_code: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.preparing: Future[Path] | None = None
        if str(desired.get("entry")) not in entries:
            self._fail(f"entry {desired.get('entry')!r} is not allowed on this node")

    @property
    def key(self) -> tuple[int, int]:
        return self.id, self.attempt

    @property
    def final(self) -> bool:
        return self.status in ("succeeded", "failed", "stopped")

    def report(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "attempt": self.attempt,
            "status": self.status,
            "exit_code": self.exit_code,
            "pid": self.proc.pid if self.proc else None,
            "error": self.error[-ERROR_TAIL:],
        }

    def step(self) -> bool:
        """Advance the state machine; True if the status changed."""
        before = self.status
        if self.final:
            return False
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                self._on_exit(code)
        elif self.preparing is None:
            self.preparing = self.pool.submit(self._prepare)
        elif self.preparing.done():
            try:
                spec_path = self.preparing.result()
            except Exception as exc:
                self._fail(f"cannot prepare the workload: {exc}")
            else:
                self._spawn(spec_path)
        return before != self.status

    def _prepare(self) -> Path:
        """Download the base model and the files, then write ``spec.json`` (pool thread)."""
        model = self.desired.get("model")
        model_dir = self.cache.fetch(model) if model else None
        fetch_files(self.paths.files, self.desired.get("files") or [])
        self.paths.output.mkdir(parents=True, exist_ok=True)
        spec = {
            **dict(self.desired.get("spec") or {}),
            "model_dir": str(model_dir) if model_dir else None,
            "files_dir": str(self.paths.files),
            "output_dir": str(self.paths.output),
            "portal": self.portal,
        }
        self.paths.spec.write_text(json.dumps(spec, indent=2))
        return self.paths.spec

    def _spawn(self, spec_path: Path) -> None:
        try:
            launch = workload_launch(self.desired, spec_path, os.environ)
            logger.info("starting workload %s: %s", self.key, " ".join(launch.argv))
            log, env = self.paths.log, launch.env
            self.proc = spawn(launch.argv, log=log, env=env, stdin=subprocess.PIPE)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            self._fail(f"cannot start the workload: {exc}")
            return
        self.status = "running"

    def _on_exit(self, code: int) -> None:
        self._close_stdin()
        self.exit_code = code
        if code == 0:
            self.status, self.error = "succeeded", ""
            logger.info("workload %s succeeded", self.key)
        else:
            self._fail(f"exited with code {code}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        log = self.paths.log
        return log.read_text(errors="replace")[-ERROR_TAIL:] if log.exists() else ""

    def _fail(self, error: str) -> None:
        self.status, self.error = "failed", error
        logger.warning("workload %s failed: %s", self.key, error.splitlines()[0] if error else "")

    def _close_stdin(self) -> None:
        if self.proc is not None and self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def stop(self) -> None:
        """Stop the child (its process group: SIGTERM, grace, SIGKILL); a workload not yet
        final becomes ``stopped``. A download in flight is left to finish unused."""
        if self.proc is not None:
            stop(self.proc, grace_s=STOP_GRACE_S)
            self._close_stdin()
            self.exit_code = self.proc.returncode
        if not self.final:
            self.status = "stopped"
        if self.preparing is not None:
            self.preparing.cancel()

    def discard(self) -> None:
        """Remove the attempt's inputs and outputs (the log stays); after :meth:`stop`."""
        if self.preparing is not None and not self.preparing.done():
            return  # a download still writes there: left behind rather than raced
        shutil.rmtree(self.paths.root, ignore_errors=True)
