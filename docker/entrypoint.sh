#!/bin/sh
# Entrypoint of the openmaas platform image (web, worker, beat and the one-shot migrate).
#
#   openmaas-entrypoint init        apply migrations, create the object-store buckets, exit
#   openmaas-entrypoint CMD [ARG…]  (with RUN_MIGRATIONS=1: do `init` first) then exec CMD
#
# Both steps are idempotent. Migrations run under a PostgreSQL advisory lock, so several
# containers started with RUN_MIGRATIONS=1 at once apply them one after the other.
# ENSURE_BUCKETS=0 skips bucket creation (e.g. on a managed S3 whose buckets an operator
# made by hand).
set -eu

prepare() {
    python - <<'PY'
import os

import django

django.setup()

from django.core.management import call_command
from django.db import connection

LOCK = 0x6F6D6161  # "omaa": one lock id for every openmaas migrate
with connection.cursor() as cursor:
    cursor.execute("SELECT pg_advisory_lock(%s)", [LOCK])
    try:
        call_command("migrate", interactive=False)
    finally:
        cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK])

if os.environ.get("ENSURE_BUCKETS", "1") != "0":
    from portal.storage import BUCKETS, store

    objects = store()
    objects.ensure_buckets()
    print("Object store ready:", ", ".join(objects.bucket(kind) for kind in BUCKETS))
PY
}

if [ "${1:-}" = "init" ]; then
    prepare
    exit 0
fi

if [ "${RUN_MIGRATIONS:-0}" = "1" ]; then
    prepare
fi

exec "$@"
