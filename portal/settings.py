"""Settings for openmaas: one module, every value from the environment.

Defaults are safe for a single local machine (the embedded stack of ``make run``);
production sets the variables listed in the README's configuration table.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DEVSTACK_DIR = Path(env_str("OPENMAAS_DEVSTACK_DIR", str(BASE_DIR / ".devstack")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if not (DEBUG or env_bool("OPENMAAS_LOCAL", True)):
        raise ImproperlyConfigured("SECRET_KEY must be set when OPENMAAS_LOCAL is off")
    SECRET_KEY = "openmaas-local-insecure-key-change-me-in-production"  # noqa: S105
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
PUBLIC_URL = env_str("PUBLIC_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal",
    "datasets",
    "training",
    "evaluation",
    "governance",
    "compute",
    "axes",
]

MIDDLEWARE = [
    "portal.logs.request_id_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last: turns a login lockout into a 429
]

# Login throttling (django-axes): AXES_FAILURE_LIMIT failed logins for one (username,
# client address) lock that pair out for AXES_COOLOFF_S seconds, on the web login and the
# API login alike; a success resets the count. Attempts live in the database, so every
# web process sees them.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("AXES_COOLOFF_S", 900, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_LOCKOUT_CALLABLE = "portal.lockout.lockout_response"

ROOT_URLCONF = "portal.urls"
ASGI_APPLICATION = "portal.asgi.application"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "governance.context.governance_nav",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/openmaas")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
    )
}
if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL", "redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "openmaas",
    }
}

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_IMPORTS = ["compute.metering.tasks"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # the worker logs through LOGGING below
CELERY_BEAT_SCHEDULE = {
    "compute-reconcile": {"task": "compute.tasks.reconcile_pool", "schedule": 5.0},
    "metering-drain": {
        "task": "compute.metering.tasks.drain_usage",
        "schedule": float(env_int("METERING_DRAIN_INTERVAL_S", 2, minimum=1)),
        "options": {"expires": 30},
    },
    "datasets-sweep": {
        "task": "datasets.tasks.sweep_jobs",
        "schedule": 15.0,
        "options": {"expires": 60},
    },
    "training-advance": {
        "task": "training.tasks.advance_waiting_jobs",
        "schedule": 10.0,
        "options": {"expires": 30},
    },
}

# Object store (S3 API): MinIO in production, SeaweedFS locally and in tests.
S3_ENDPOINT = env_str("S3_ENDPOINT", "http://127.0.0.1:8333")
S3_ACCESS_KEY = env_str("S3_ACCESS_KEY", "openmaas")
S3_SECRET_KEY = env_str("S3_SECRET_KEY", "openmaas-local-secret")
S3_REGION = env_str("S3_REGION", "us-east-1")
S3_BUCKET_PREFIX = env_str("S3_BUCKET_PREFIX", "openmaas")
S3_PUBLIC_ENDPOINT = env_str("S3_PUBLIC_ENDPOINT", "")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = env_str("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
TIME_ZONE = env_str("TIME_ZONE", "Asia/Shanghai")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Without collectstatic (make run), serve straight from the apps' static folders.
WHITENOISE_USE_FINDERS = True
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("TRUST_X_FORWARDED_PROTO", False) else None
)

# Limits on every request. The /v1 gateway rejects bigger bodies before reading them.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024)
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 4 * 1024 * 1024, minimum=1024)
GATEWAY_UPSTREAM_TIMEOUT_S = env_int("GATEWAY_UPSTREAM_TIMEOUT_S", 600, minimum=1)
GATEWAY_ROUTE_TTL_S = float(env_int("GATEWAY_ROUTE_TTL_MS", 1000, minimum=0)) / 1000
MODEL_MAX_UPLOAD_BYTES = env_int("MODEL_MAX_UPLOAD_BYTES", 50 * 1024**3, minimum=1)

# Usage metering: the worker's batch size, and how long an entry a worker took but never
# acknowledged (it died) stays pending before another worker claims it.
METERING_BATCH_SIZE = env_int("METERING_BATCH_SIZE", 500, minimum=1)
METERING_RECLAIM_AFTER_S = env_int("METERING_RECLAIM_AFTER_S", 60, minimum=1)
# Bearer token of GET /metrics (Prometheus). Unset: /metrics answers 404.
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

# Limits and metering on the /v1 gateway (see docs/architecture.md, "Limits").
GATEWAY_LIMITS = env_bool("GATEWAY_LIMITS", True)
GATEWAY_METERING = env_bool("GATEWAY_METERING", True)
# When Redis cannot be reached: "closed" answers inference with 503 limits_unavailable;
# "open" serves it unmetered and unlimited (keys are then read from the database).
GATEWAY_REDIS_FAILURE = env_str("GATEWAY_REDIS_FAILURE", "closed")
if GATEWAY_REDIS_FAILURE not in ("closed", "open"):
    raise ImproperlyConfigured("GATEWAY_REDIS_FAILURE must be 'closed' or 'open'")
GATEWAY_AUTH_FAILURES_PER_MINUTE = env_int("GATEWAY_AUTH_FAILURES_PER_MINUTE", 30, minimum=1)
GATEWAY_AUTH_THREADS = env_int("GATEWAY_AUTH_THREADS", 4, minimum=1)
# Tokens reserved for the completion when a request sets no max_tokens.
GATEWAY_DEFAULT_MAX_TOKENS = env_int("GATEWAY_DEFAULT_MAX_TOKENS", 256, minimum=1)
# A concurrency slot of a process that died is freed after this long.
GATEWAY_CONCURRENCY_LEASE_S = env_int("GATEWAY_CONCURRENCY_LEASE_S", 900, minimum=1)
# Leases (portal/limits/leases.py): a key whose requests per minute are at least
# SHARE × MIN_REQUESTS (or unlimited), whose concurrency is at least 16 (or unlimited) and
# that no monthly budget applies to is admitted against a lease of 1/SHARE of its
# per-minute limits, topped up or handed back every GATEWAY_LEASE_MS. SHARE 0: no leases.
GATEWAY_LEASE_SHARE = env_int("GATEWAY_LEASE_SHARE", 600, minimum=0)
GATEWAY_LEASE_MIN_REQUESTS = env_int("GATEWAY_LEASE_MIN_REQUESTS", 8, minimum=1)
GATEWAY_LEASE_S = env_int("GATEWAY_LEASE_MS", 1000, minimum=10) / 1000
GATEWAY_USAGE_STREAM_MAXLEN = env_int("GATEWAY_USAGE_STREAM_MAXLEN", 1_000_000, minimum=1000)
# Per-key defaults for keys that set no limit of their own; 0 means unlimited.
KEY_DEFAULT_RPM = env_int("KEY_DEFAULT_RPM", 600, minimum=0)
KEY_DEFAULT_TPM = env_int("KEY_DEFAULT_TPM", 1_000_000, minimum=0)
KEY_DEFAULT_MAX_CONCURRENT = env_int("KEY_DEFAULT_MAX_CONCURRENT", 32, minimum=0)

# Compute pool
NODE_HEARTBEAT_INTERVAL_S = env_int("NODE_HEARTBEAT_INTERVAL_S", 2, minimum=1)
NODE_OFFLINE_AFTER_S = env_int("NODE_OFFLINE_AFTER_S", 30, minimum=2)
# Nodes on the portal's own host (the local stack). Production sets 0.
COMPUTE_ALLOW_LOOPBACK_NODES = env_bool("COMPUTE_ALLOW_LOOPBACK_NODES", True)
# Networks node addresses must resolve into: CIDRs, or ``public`` for any globally routable
# address. Empty (the default): only loopback, and only with COMPUTE_ALLOW_LOOPBACK_NODES.
COMPUTE_NODE_NETWORKS = env_list("COMPUTE_NODE_NETWORKS", [])
for _network in COMPUTE_NODE_NETWORKS:
    if _network != "public":
        try:
            ipaddress.ip_network(_network, strict=False)
        except ValueError as _exc:
            raise ImproperlyConfigured(f"COMPUTE_NODE_NETWORKS: {_exc}") from _exc

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.auth.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "portal.api.pagination.Pagination",
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "portal.api.negotiation.FormatNegotiation",
    "PAGE_SIZE": 50,
    "DEFAULT_PARSER_CLASSES": [
        "portal.api.parsers.SafeJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "portal.errors.drf_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "openmaas API",
    "DESCRIPTION": "Model-as-a-service platform: hub, datasets, training, evaluation, "
    "governance and compute pool.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from the installed sidecar package: /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "portal.api.schema.add_error_responses",
    ],
}

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# Logs: JSON lines (default) or text, each with the request id; API keys are masked and
# content fields (prompts, completions) dropped unless LOG_CONTENT=1 (debugging only).
LOG_FORMAT = env_str("LOG_FORMAT", "json")
if LOG_FORMAT not in ("json", "text"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: use json or text")
LOG_CONTENT = env_bool("LOG_CONTENT", False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "portal.logs.ContextFilter", "log_content": LOG_CONTENT}},
    "formatters": {
        "json": {"()": "portal.logs.JsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Datasets: upload limits, the browser's multipart part size, the viewer's local cache of
# Parquet copies, and when a silent ingest/processing job counts as lost.
DATASET_MAX_FILE_BYTES = env_int("DATASET_MAX_FILE_BYTES", 2 * 1024**3, minimum=1)
DATASET_MAX_FILES_PER_VERSION = env_int("DATASET_MAX_FILES_PER_VERSION", 20, minimum=1)
DATASET_UPLOAD_PART_BYTES = env_int("DATASET_UPLOAD_PART_BYTES", 16 * 1024**2, minimum=5 * 1024**2)
DATASET_VIEWER_CACHE_DIR = Path(
    env_str("DATASET_VIEWER_CACHE_DIR", str(DEVSTACK_DIR / "viewer-cache"))
)
DATASET_VIEWER_CACHE_BYTES = env_int("DATASET_VIEWER_CACHE_BYTES", 4 * 1024**3, minimum=1)
DATASET_JOB_SILENT_S = env_int("DATASET_JOB_SILENT_S", 120, minimum=5)
FILES_MAX_BYTES = env_int("FILES_MAX_BYTES", 512 * 1024**2, minimum=1)

# Fine-tuning: admission limits, checkpoint cadence (0: a quarter of the run) and how many
# are kept, the runner's
# sequence length, and the largest checkpoint or result file a runner may upload.
FINE_TUNING_MAX_ACTIVE_JOBS = env_int("FINE_TUNING_MAX_ACTIVE_JOBS", 3, minimum=1)
FINE_TUNING_MAX_GPUS = env_int("FINE_TUNING_MAX_GPUS", 8, minimum=0)
FINE_TUNING_CHECKPOINT_EVERY = env_int("FINE_TUNING_CHECKPOINT_EVERY", 0, minimum=0)
FINE_TUNING_KEEP_CHECKPOINTS = env_int("FINE_TUNING_KEEP_CHECKPOINTS", 3, minimum=1)
FINE_TUNING_MAX_SEQ_LEN = env_int("FINE_TUNING_MAX_SEQ_LEN", 1024, minimum=16)
FINE_TUNING_MAX_FILE_BYTES = env_int("FINE_TUNING_MAX_FILE_BYTES", 64 * 1024**3, minimum=1)

# Evaluation: where runs reach pool models (the gateway, through the public URL by
# default), the key that encrypts endpoint and run keys at rest (SECRET_KEY when unset),
# per-user and per-task limits, and when a silent run counts as lost.
EVAL_GATEWAY_URL = env_str("EVAL_GATEWAY_URL", PUBLIC_URL)
EVAL_ENCRYPTION_KEY = env_str("EVAL_ENCRYPTION_KEY", "")
EVAL_MAX_ACTIVE_RUNS = env_int("EVAL_MAX_ACTIVE_RUNS", 3, minimum=1)
EVAL_MAX_DOCS = env_int("EVAL_MAX_DOCS", 5000, minimum=1)
EVAL_RUN_SILENT_S = env_int("EVAL_RUN_SILENT_S", 120, minimum=5)
EVAL_KEY_TTL_S = env_int("EVAL_KEY_TTL_S", 6 * 3600, minimum=60)
# Runs share the job statuses and owned things the visibilities: one enum each in the schema.
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"] = {
    "JobStatusEnum": "portal.models.jobs.JobStatus",
    "VisibilityEnum": "portal.models.ownership.Visibility",
}
# Leaderboards: submissions evaluated at once per board; the arena: battles per user and
# minute (0: no limit), answer length and time, bootstrap rounds of the rating intervals.
EVAL_LEADERBOARD_CONCURRENCY = env_int("EVAL_LEADERBOARD_CONCURRENCY", 2, minimum=1)
EVAL_ARENA_BATTLES_PER_MINUTE = env_int("EVAL_ARENA_BATTLES_PER_MINUTE", 10, minimum=0)
EVAL_ARENA_MAX_TOKENS = env_int("EVAL_ARENA_MAX_TOKENS", 256, minimum=1)
EVAL_ARENA_TIMEOUT_S = env_int("EVAL_ARENA_TIMEOUT_S", 120, minimum=1)
EVAL_ARENA_BOOTSTRAP_ROUNDS = env_int("EVAL_ARENA_BOOTSTRAP_ROUNDS", 200, minimum=10)
CELERY_BEAT_SCHEDULE["evaluation-sweep"] = {
    "task": "evaluation.tasks.sweep_runs",
    "schedule": 15.0,
    "options": {"expires": 60},
}

# Governance: /v1/moderations limits (inputs per request, characters per input).
MODERATION_MAX_INPUTS = env_int("MODERATION_MAX_INPUTS", 32, minimum=1)
MODERATION_MAX_CHARS = env_int("MODERATION_MAX_CHARS", 32_000, minimum=1)

# governance: classifiers
# The guard model: a served model name asked (Llama-Guard style) about texts whose
# cheap-checker scores fall inside GOVERNANCE_GUARD_BAND ("" = no guard). It is reached
# through the platform's own gateway (GOVERNANCE_GUARD_URL) with short-lived keys
# (GOVERNANCE_GUARD_KEY_TTL_S) of GOVERNANCE_GUARD_USER (default: the first superuser),
# whose usage they count against; temperature 0, GOVERNANCE_GUARD_MAX_TOKENS tokens.
GOVERNANCE_GUARD_MODEL = env_str("GOVERNANCE_GUARD_MODEL", "")
# "low,high": the scores (inclusive) at which the cheap checkers count as unsure.
GOVERNANCE_GUARD_BAND = tuple(
    float(bound) for bound in env_str("GOVERNANCE_GUARD_BAND", "0.3,0.7").split(",", 1)
)
GOVERNANCE_GUARD_URL = env_str("GOVERNANCE_GUARD_URL", PUBLIC_URL)
GOVERNANCE_GUARD_USER = env_str("GOVERNANCE_GUARD_USER", "")
GOVERNANCE_GUARD_KEY_TTL_S = env_int("GOVERNANCE_GUARD_KEY_TTL_S", 900, minimum=60)
GOVERNANCE_GUARD_MAX_TOKENS = env_int("GOVERNANCE_GUARD_MAX_TOKENS", 24, minimum=1)
GOVERNANCE_GUARD_TIMEOUT_S = env_int("GOVERNANCE_GUARD_TIMEOUT_S", 30, minimum=1)

# governance: registry
# AIGC labels and the provenance registry: the ContentProducer named in labels and the
# key that signs them (SECRET_KEY when unset; the gateway signs with the same pair); the
# largest file /api/governance/verify and uploads/check accept; the longest answer an
# export renders; verify's throttle rates (DRF "<n>/<s|min|hour|day>") for anonymous
# callers per address and signed-in ones per user; the font of PNG exports (a TrueType
# file with CJK glyphs; "" = the first one installed).
GOVERNANCE_PRODUCER = env_str("GOVERNANCE_PRODUCER", "openmaas")
GOVERNANCE_LABEL_KEY = env_str("GOVERNANCE_LABEL_KEY", "")
GOVERNANCE_UPLOAD_MAX_BYTES = env_int("GOVERNANCE_UPLOAD_MAX_BYTES", 20 * 1024**2, minimum=1)
GOVERNANCE_EXPORT_MAX_CHARS = env_int("GOVERNANCE_EXPORT_MAX_CHARS", 200_000, minimum=1)
GOVERNANCE_VERIFY_ANON_RATE = env_str("GOVERNANCE_VERIFY_ANON_RATE", "20/min")
GOVERNANCE_VERIFY_USER_RATE = env_str("GOVERNANCE_VERIFY_USER_RATE", "300/min")
for _rate in (GOVERNANCE_VERIFY_ANON_RATE, GOVERNANCE_VERIFY_USER_RATE):
    _count, _, _unit = _rate.partition("/")
    if not (_count.isdigit() and int(_count) > 0 and _unit in ("s", "sec", "min", "hour", "day")):
        raise ImproperlyConfigured(f"a governance verify rate must read like 20/min, not {_rate}")
GOVERNANCE_EXPORT_FONT = env_str("GOVERNANCE_EXPORT_FONT", "")

# governance: review
# The time-to-review target of a review item (seconds; default one day): items pending
# past it are escalated by the beat task below, which runs every few minutes.
GOVERNANCE_REVIEW_TARGET_S = env_int("GOVERNANCE_REVIEW_TARGET_S", 86400, minimum=60)
# Reports ("report this answer") a user may file per hour (0: no limit).
GOVERNANCE_REPORTS_PER_HOUR = env_int("GOVERNANCE_REPORTS_PER_HOUR", 30, minimum=0)
CELERY_BEAT_SCHEDULE["governance-review-overdue"] = {
    "task": "governance.jobs.review.escalate_overdue",
    "schedule": float(env_int("GOVERNANCE_REVIEW_SWEEP_S", 300, minimum=5)),
    "options": {"expires": 120},
}
# The review API's choice sets get names of their own in the API schema ("source" and
# "status" choices of other components would collide with them).
if isinstance(_enum_names := SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"], dict):
    _enum_names["GovernanceSourceEnum"] = "governance.models.DecisionSource"
    _enum_names["ReviewDecisionEnum"] = "governance.models.ReviewDecision"
    _enum_names["ReviewStatusEnum"] = "governance.models.ReviewStatus"
    _enum_names["AppealStatusEnum"] = "governance.models.AppealStatus"
    _enum_names["ReportStatusEnum"] = "governance.models.ReportStatus"

# governance: compliance
# Pending reports start their run once the sampled questions are ingested; running ones
# collect their checks when the run ends (the finished-hook does it at once; this sweep is
# the backstop).
CELERY_BEAT_SCHEDULE["governance-compliance-sweep"] = {
    "task": "governance.jobs.compliance.sweep_reports",
    "schedule": 10.0,
    "options": {"expires": 30},
}
# Overrides of TC260-003's minimums, thresholds and sample counts by key (see
# governance.services.compliance.MINIMUMS), e.g. {"max_age_days": 30}.
GOVERNANCE_COMPLIANCE: dict[str, float] = {}

# governance: policies
# The governance lists' kind (lexicon, allow-list, question banks) and the labelled file
# kinds of /verify each get an enum name of their own in the API schema (several
# components' "kind" choices would otherwise collide).
if isinstance(_enum_names := SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"], dict):
    _enum_names["ListKindEnum"] = "governance.models.ListKind"
    _enum_names["LabelledFileKindEnum"] = "governance.labels.files.KINDS"

# governance: inline
# The gateway's inline moderation (input guard, streamed output filter, labels);
# GOVERNANCE_INLINE=0 turns it off (the bench's "off").
GOVERNANCE_INLINE = env_bool("GOVERNANCE_INLINE", True)
# Characters of a stream's look-back window (a term split across chunks is caught when
# it is at most this long; redacting policies hold this much back).
GOVERNANCE_LOOKBACK_CHARS = env_int("GOVERNANCE_LOOKBACK_CHARS", 64, minimum=8)
# Decisions and provenance are kept this long (≥ 6 months by the labelling rules).
GOVERNANCE_RETENTION_DAYS = env_int("GOVERNANCE_RETENTION_DAYS", 183, minimum=1)
# The checked text kept with a decision (characters).
GOVERNANCE_EXCERPT_CHARS = env_int("GOVERNANCE_EXCERPT_CHARS", 2000, minimum=0)
CELERY_BEAT_SCHEDULE["governance-drain"] = {
    "task": "governance.jobs.events.drain_governance",
    "schedule": 2.0,
    "options": {"expires": 10},
}
CELERY_BEAT_SCHEDULE["governance-retention"] = {
    "task": "governance.jobs.events.sweep_retention",
    "schedule": 86400.0,
    "options": {"expires": 3600},
}

# governance: watermark
# The green-list text watermark (engine_args ``watermark`` on transformers deployments):
# /verify reports a text as watermarked when its z-score reaches GOVERNANCE_WATERMARK_Z
# over at least GOVERNANCE_WATERMARK_MIN_TOKENS scored tokens (the first
# GOVERNANCE_WATERMARK_MAX_TOKENS of the text are scored), trying at most
# GOVERNANCE_WATERMARK_DEPLOYMENTS watermarked deployments the caller may see, newest first.
try:
    GOVERNANCE_WATERMARK_Z = float(env_str("GOVERNANCE_WATERMARK_Z", "4.0"))
except ValueError:
    raise ImproperlyConfigured("GOVERNANCE_WATERMARK_Z must be a number") from None
if not GOVERNANCE_WATERMARK_Z > 0:
    raise ImproperlyConfigured("GOVERNANCE_WATERMARK_Z must be above 0")
GOVERNANCE_WATERMARK_MIN_TOKENS = env_int("GOVERNANCE_WATERMARK_MIN_TOKENS", 16, minimum=1)
GOVERNANCE_WATERMARK_MAX_TOKENS = env_int("GOVERNANCE_WATERMARK_MAX_TOKENS", 4096, minimum=16)
GOVERNANCE_WATERMARK_DEPLOYMENTS = env_int("GOVERNANCE_WATERMARK_DEPLOYMENTS", 8, minimum=1)
