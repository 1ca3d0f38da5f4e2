"""A stand-in workload entry (``python -m tests.compute.fake_runner --spec spec.json``).

It records what it was given (its spec, command line, token, visible GPUs, files) to
``spec["record_dir"]/seen.json``, prints ``spec["say"]``, then optionally waits for EOF on
stdin (the agent's "I am gone"; ``stdin-closed`` is written then) and exits with
``spec["exit_code"]``. ``ignore_sigterm`` makes it outlive a SIGTERM, so only stdin can end it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    spec = json.loads(Path(parser.parse_args().spec).read_text())
    record = Path(spec["record_dir"])
    files_dir = Path(spec["files_dir"])
    model_dir = Path(spec["model_dir"]) if spec.get("model_dir") else None
    seen = {
        "spec": spec,
        "cmdline": [a.decode() for a in Path("/proc/self/cmdline").read_bytes().split(b"\0")],
        "token": os.environ.get("OPENMAAS_RUN_TOKEN"),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "env_keys": sorted(os.environ),
        "files": {
            p.relative_to(files_dir).as_posix(): p.read_text()
            for p in files_dir.rglob("*")
            if p.is_file()
        },
        "model_files": sorted(p.name for p in model_dir.iterdir()) if model_dir else [],
    }
    record.mkdir(parents=True, exist_ok=True)
    (record / "seen.json.tmp").write_text(json.dumps(seen))
    (record / "seen.json.tmp").replace(record / "seen.json")
    if spec.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(spec.get("say", ""), flush=True)
    if spec.get("wait_stdin"):
        sys.stdin.buffer.read()
        (record / "stdin-closed").write_text("eof")
    return int(spec.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())
