"""Container healthcheck of the web process: GET /healthz (it also queries the database).

Django answers 400 to a Host header that is not in ALLOWED_HOSTS, so the request is sent
with the first concrete entry of ALLOWED_HOSTS rather than with 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def allowed_host() -> str:
    for entry in os.environ.get("ALLOWED_HOSTS", "").split(","):
        entry = entry.strip().lstrip(".")  # ".example.com" also allows example.com
        if entry and entry != "*":
            return entry
    return "localhost"


def main() -> int:
    port = os.environ.get("HEALTHCHECK_PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/healthz", headers={"Host": allowed_host()}
    )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 - fixed URL
            ok = response.status == 200
    except (urllib.error.URLError, OSError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
