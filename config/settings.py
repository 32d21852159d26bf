"""Django settings, read from the environment through one django-environ object.

Every setting has a default that works on a developer machine (Postgres and Redis on
127.0.0.1, trust auth). With ``DEBUG=false`` the insecure defaults are refused at start-up
(see ``_refuse_insecure_production_settings`` at the bottom).
"""

from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

INSECURE_SECRET_KEY = "django-insecure-local-development-key-do-not-use-in-production"

env = environ.Env()
# A .env file at the repo root is read when present (never required).
if (BASE_DIR / ".env").is_file():
    env.read_env(str(BASE_DIR / ".env"))

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
API_BASE_URL = env.str("API_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "rest_framework_simplejwt",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "core.apps.CoreConfig",
    "accounts.apps.AccountsConfig",
    "fiches.apps.FichesConfig",
    "realtime.apps.RealtimeConfig",
    "batches.apps.BatchesConfig",
    "transcriptions.apps.TranscriptionsConfig",
    "audits.apps.AuditsConfig",
    "products.apps.ProductsConfig",
    "chat.apps.ChatConfig",
    "automation.apps.AutomationConfig",
    "review_queues.apps.ReviewQueuesConfig",
    "analytics.apps.AnalyticsConfig",
    "costs.apps.CostsConfig",
    "privacy.apps.PrivacyConfig",
    "ops.apps.OpsConfig",
    "django_prometheus",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.logging.RequestIdMiddleware",
    "core.request_guards.BodySizeLimitMiddleware",  # 413 before a body over API_MAX_BODY_BYTES is read
    "core.request_guards.NulCharacterMiddleware",  # a NUL in the path is a 404 (Postgres refuses it: was a 500)
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

# Largest request body in bytes (default 1 MiB): over it, 413 payload_too_large in the error
# envelope, before the body is read (core/request_guards.py). It is also Django's limit on a body read
# in memory, and covers the file parts of a multipart body too (nothing here takes uploads).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/callcentre"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, cache, Celery ---------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="cc"),
        "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    }
}

# Celery (read by config/celery.py from the CELERY_* names). See DESIGN.md, "Celery conventions":
# acks late + reject on worker lost (a task whose worker dies is re-delivered), prefetch 1, JSON
# only, and the hard time limit below the Redis visibility timeout (or Redis would re-deliver a
# message whose task may still legitimately be running).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": _VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": _VISIBILITY_TIMEOUT}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A worker keeps its database connection across this many tasks (Celery's Django fixup closes it
# before and after every task by default: a new Postgres backend per unit cost more than the unit);
# core.tasks health-checks it before each task, as a request does. 0 restores close-per-task.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=500)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=900)
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=840)
CELERY_TASK_DEFAULT_QUEUE = "default"
# default: orchestration and updaters; crm: CRM calls (prefork worker). webhooks, stt_* and llm:
# slow network calls, each on an I/O worker pool of its own (threads). stt_high/stt/stt_low carry
# a transcription's priority: a worker consuming them in that order takes high first.
CELERY_QUEUE_NAMES = ("default", "crm", "webhooks", "stt_high", "stt", "stt_low", "llm")
# RabbitMQ (CELERY_BROKER_URL=amqp://...), the durable broker: every queue is a quorum queue (durable,
# replicated; Celery then takes its prefetch per consumer and delays countdown/ETA tasks in RabbitMQ itself,
# "native delayed delivery", which needs topic exchanges); publisher confirms (a publish returns once the
# broker has the message). RabbitMQ's consumer_timeout (default 30 min) must exceed CELERY_TASK_TIME_LIMIT:
# acks are late, so a task's message stays unacknowledged while it runs (deploy/rabbitmq.conf). Redis stays
# the default broker and keeps locks, semaphores, inboxes and caches either way.
CELERY_BROKER_IS_AMQP = CELERY_BROKER_URL.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}
if CELERY_BROKER_IS_AMQP:
    CELERY_TASK_QUEUES = tuple(
        Queue(
            name,
            Exchange(name, type="topic", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
        for name in CELERY_QUEUE_NAMES
    )
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
    CELERY_WORKER_DETECT_QUORUM_QUEUES = True
    # A publish during a broker restart waits for it (up to ~10 s) instead of leaving the work to a reconciler.
    CELERY_TASK_PUBLISH_RETRY_POLICY = {
        "max_retries": 12,
        "interval_start": 0.2,
        "interval_step": 0.4,
        "interval_max": 1.0,
    }
else:
    CELERY_TASK_QUEUES = tuple(Queue(name, Exchange(name), routing_key=name) for name in CELERY_QUEUE_NAMES)
CELERY_TASK_ROUTES = {
    # Tasks that call the CRM run on the "crm" queue, outgoing webhooks on "webhooks".
    "fiches.tasks.crm.*": {"queue": "crm"},
    "realtime.tasks.webhooks.*": {"queue": "webhooks"},
    "transcriptions.tasks.transcribe_recording": {"queue": "stt"},
    "audits.tasks.llm.*": {"queue": "llm"},
    "automation.tasks.crm.*": {"queue": "crm"},
    "automation.tasks.webhooks.*": {"queue": "webhooks"},  # run notifications (SMTP: seconds)
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# (The visibility timeout is Redis's: RabbitMQ re-delivers a message when its consumer's connection drops.)
_LIMIT_CEILING = float("inf") if CELERY_BROKER_IS_AMQP else _VISIBILITY_TIMEOUT
if not CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < _LIMIT_CEILING:
    raise ImproperlyConfigured(
        "Celery time limits must satisfy CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT < "
        f"CELERY_VISIBILITY_TIMEOUT (got {CELERY_TASK_SOFT_TIME_LIMIT}, {CELERY_TASK_TIME_LIMIT}, "
        f"{_VISIBILITY_TIMEOUT})."
    )
# A worker told to stop (SIGTERM, with REMAP_SIGTERM=SIGQUIT in its environment as the Procfile and deploy/ set
# it): Celery's soft shutdown. The tasks in flight get CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT seconds to finish; then
# those still running are cancelled and, their messages never acknowledged (late acks), handed back to the broker
# for another worker (every task is idempotent). Without REMAP_SIGTERM, SIGTERM is a warm shutdown: the worker
# waits for every task in flight, up to CELERY_TASK_TIME_LIMIT. The orchestrator's grace period must exceed it.
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env.float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", default=60.0)

# --- Auth -------------------------------------------------------------------------------
AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTH_SEED_ADMIN_EMAIL = env.str("AUTH_SEED_ADMIN_EMAIL", default="")
AUTH_SEED_ADMIN_PASSWORD = env.str("AUTH_SEED_ADMIN_PASSWORD", default="")

JWT_ACCESS_MINUTES = env.int("JWT_ACCESS_MINUTES", default=15)
JWT_REFRESH_DAYS = env.int("JWT_REFRESH_DAYS", default=7)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=JWT_ACCESS_MINUTES),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=JWT_REFRESH_DAYS),
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default=SECRET_KEY),
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
    "UPDATE_LAST_LOGIN": True,
}

LOGIN_THROTTLE_IP_RATE = env.str("LOGIN_THROTTLE_IP_RATE", default="30/min")
LOGIN_THROTTLE_EMAIL_RATE = env.str("LOGIN_THROTTLE_EMAIL_RATE", default="5/min")

# --- REST framework / OpenAPI -----------------------------------------------------------
# Seconds a user's row and effective grants stay cached in Redis for authentication (any user,
# role or grant change invalidates them at once); 0 reads them from the database on every request.
AUTH_CACHE_SECONDS = env.int("AUTH_CACHE_SECONDS", default=60)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.auth_cache.CachedJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "core.parsers.JSONParser",  # DRF's, with a too-deeply nested body a 400 (not a 500)
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.exceptions.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": LOGIN_THROTTLE_IP_RATE,
        "login_email": LOGIN_THROTTLE_EMAIL_RATE,
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Trusted reverse proxies in front of us: 0 = use REMOTE_ADDR and ignore X-Forwarded-For
    # (otherwise a client could pick its own throttling identity).
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Call-centre sales platform API",
    "DESCRIPTION": (
        "Fiche cache, progressive date-range fetch jobs and realtime notifications. "
        "Authenticate with `POST /api/auth/login`, then send `Authorization: Bearer <access>`. "
        'Every error has the shape `{"error": {"code", "message", "details"}}`.'
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api",
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "core.openapi.document_body_limit"],
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": ["pending", "processing", "complete", "failed"],
        "HealthStatusEnum": ["ok", "error"],
        "AuditStatusEnum": ["pending", "waiting_transcription", "waiting_budget", "running", "completed", "failed"],
        "AuditStepStatusEnum": ["pending", "running", "completed", "failed"],
        "ControlPointStatusEnum": ["pass", "fail", "uncertain", "not_applicable"],
        "ReviewerVerdictEnum": ["pass", "fail", "not_applicable"],
        "EvidenceSpeakerEnum": ["agent", "client", "any"],  # whose words prove a control point
        "TurnSpeakerEnum": ["agent", "client"],  # who speaks in a transcript turn
        "EffectiveVerdictEnum": ["pass", "fail", "uncertain", "not_applicable", "pending"],  # pending: advisory
        "DisputeProposalEnum": ["pass", "not_applicable"],
        "DisputeStatusEnum": ["open", "accepted", "rejected"],
        "TrustStateEnum": ["trusted", "withdrawn"],
        "QueueItemStateEnum": ["waiting", "claimed", "done"],
        "QueueProgressScopeEnum": ["queue", "yours"],
        "ScopeEnum": ["SELF", "GROUP", "ALL"],
        "UsageKindEnum": ["llm", "stt"],
        "UsagePurposeEnum": ["audit_step", "rerun", "chat", "transcription"],
        "BudgetModeEnum": ["wait", "refuse"],
        "ModeEnum": ["dateRange", "relative", "manual"],  # automation's fiche selection (named before BudgetMode)
        "BudgetScopeEnum": ["global", "user"],
    },
}

# --- Leases of claimed work (core.leases) ------------------------------------------------------
# A claimed unit (an audit step, a recording, a rerun) and a provider slot (speech-to-text, LLM) are
# held with this short lease, renewed by a heartbeat while the work runs: a worker that dies gives
# them back within one lease, and the reconcilers re-drive its work at their next pass.
CLAIM_LEASE_SECONDS = env.float("CLAIM_LEASE_SECONDS", default=30.0)
CLAIM_HEARTBEAT_SECONDS = env.float("CLAIM_HEARTBEAT_SECONDS", default=CLAIM_LEASE_SECONDS / 3)
if not 0 < CLAIM_HEARTBEAT_SECONDS <= CLAIM_LEASE_SECONDS / 2:
    raise ImproperlyConfigured(
        f"CLAIM_HEARTBEAT_SECONDS ({CLAIM_HEARTBEAT_SECONDS}) must be above 0 and at most half of "
        f"CLAIM_LEASE_SECONDS ({CLAIM_LEASE_SECONDS}): a lease must survive a missed beat."
    )

# --- CRM gateway and fiche cache ------------------------------------------------------------
CRM_BASE_URL = env.str("CRM_BASE_URL", default="http://127.0.0.1:8100")
CRM_API_KEY = env.str("CRM_API_KEY", default="")
CRM_TIMEOUT_SECONDS = env.float("CRM_TIMEOUT_SECONDS", default=30.0)
FICHE_SALES_INCLUDE_RECORDINGS = env.str("FICHE_SALES_INCLUDE_RECORDINGS", default="1").strip() == "1"
FICHE_FORCE_REFRESH_COOLDOWN_MS = env.int("FICHE_FORCE_REFRESH_COOLDOWN_MS", default=30 * 60 * 1000)

# Seconds a rendered date-range response is kept in Redis (invalidated by a write to one of its
# dates); 0 = off.
RANGE_RESPONSE_CACHE_SECONDS = env.int("RANGE_RESPONSE_CACHE_SECONDS", default=120)
# Fiches in one polling answer's partialData (the rest by cursor); a client may ask for up to 5000.
POLL_PARTIAL_DATA_LIMIT = env.int("POLL_PARTIAL_DATA_LIMIT", default=1000)

# --- Progressive date-range fetch jobs ---------------------------------------------------------
PROGRESSIVE_FETCH_MAX_RANGE_DAYS = env.int("PROGRESSIVE_FETCH_MAX_RANGE_DAYS", default=366)
PROGRESSIVE_FETCH_REUSE_SECONDS = env.int("PROGRESSIVE_FETCH_REUSE_SECONDS", default=300)
PROGRESSIVE_FETCH_DAY_CONCURRENCY = env.int("PROGRESSIVE_FETCH_DAY_CONCURRENCY", default=4)
PROGRESSIVE_FETCH_DAY_MAX_ERRORS = env.int("PROGRESSIVE_FETCH_DAY_MAX_ERRORS", default=3)
PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY = env.int("PROGRESSIVE_FETCH_WEBHOOK_FREQUENCY", default=5)
PROGRESSIVE_FETCH_RETRY_BASE_SECONDS = env.float("PROGRESSIVE_FETCH_RETRY_BASE_SECONDS", default=2.0)

# --- Revalidation and resilience ------------------------------------------------------------
# Global CRM call rate across every worker and request ("600/m"; "off" for none). Over it, work
# waits. Off by default: day fetches are bounded by PROGRESSIVE_FETCH_DAY_CONCURRENCY (global) and
# one fetch per date, as in the original; set it when the gateway has a quota.
CRM_RATE_LIMIT = env.str("CRM_RATE_LIMIT", default="off")
# Runs of the range warm-cache and revalidate-date tasks (the original's unkeyed functions, 20 per
# minute each); a run over it waits before it starts, never in the middle of its chunks.
CRM_REVALIDATION_RATE_LIMIT = env.str("CRM_REVALIDATION_RATE_LIMIT", default="20/m")
# CRM-bound requests of one user (details cache misses, refresh=true, cache warm): rate and burst;
# over it, 429 with Retry-After.
CRM_USER_THROTTLE_RATE = env.str("CRM_USER_THROTTLE_RATE", default="30/m")
CRM_USER_THROTTLE_BURST = env.int("CRM_USER_THROTTLE_BURST", default=10)
# Lease of a date's fetch lock and of a CRM day slot: a crashed holder frees them after this.
CRM_FETCH_LEASE_SECONDS = env.float("CRM_FETCH_LEASE_SECONDS", default=CRM_TIMEOUT_SECONDS + 65)
# TTL of the per-job updater lock (the row lock is the fence if a holder outlives it).
PROGRESSIVE_FETCH_JOB_LOCK_SECONDS = env.float("PROGRESSIVE_FETCH_JOB_LOCK_SECONDS", default=60)
CACHE_STALE_AFTER_HOURS = env.int("CACHE_STALE_AFTER_HOURS", default=24)
CACHE_WARMUP_DAYS = env.int("CACHE_WARMUP_DAYS", default=7)
SALES_LIST_CHUNK_DAYS = env.int("SALES_LIST_CHUNK_DAYS", default=5)
REFRESH_MAX_RANGE_DAYS = env.int("REFRESH_MAX_RANGE_DAYS", default=93)
REFRESH_MIN_INTERVAL_SECONDS = env.int("REFRESH_MIN_INTERVAL_SECONDS", default=60)
PROGRESSIVE_FETCH_STALL_SECONDS = env.int("PROGRESSIVE_FETCH_STALL_SECONDS", default=300)
PROGRESSIVE_FETCH_DEADLINE_SECONDS = env.int("PROGRESSIVE_FETCH_DEADLINE_SECONDS", default=1800)
WORKFLOW_LOG_DB_ENABLED = env.str("WORKFLOW_LOG_DB_ENABLED", default="0").strip().lower() in ("1", "true", "yes")

# --- Outgoing notifications ------------------------------------------------------------------
# Comma-separated scheme://host[:port] origins; when set, webhooks may only go there (and those
# may be private addresses). Unset: any public destination.
WEBHOOK_ALLOWED_ORIGINS = env.list("WEBHOOK_ALLOWED_ORIGINS", default=[])
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=15.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=3)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=10.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
WEBHOOK_PARTIAL_DATA_LIMIT = env.int("WEBHOOK_PARTIAL_DATA_LIMIT", default=500)
WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)

# Pusher Channels; unset app id/key/secret disables it (events are logged at DEBUG).
PUSHER_APP_ID = env.str("PUSHER_APP_ID", default="")
PUSHER_KEY = env.str("PUSHER_KEY", default="")
PUSHER_SECRET = env.str("PUSHER_SECRET", default="")
PUSHER_CLUSTER = env.str("PUSHER_CLUSTER", default="")
PUSHER_HOST = env.str("PUSHER_HOST", default="")
PUSHER_PORT = env.int("PUSHER_PORT", default=0) or None
PUSHER_USE_TLS = env.bool("PUSHER_USE_TLS", default=True)
PUSHER_TIMEOUT_SECONDS = env.float("PUSHER_TIMEOUT_SECONDS", default=2.0)
PUSHER_BACKOFF_SECONDS = env.float("PUSHER_BACKOFF_SECONDS", default=30.0)
# Unknown realtime events / missing payload fields raise (tests) instead of being logged.
REALTIME_STRICT_EVENTS = env.bool("REALTIME_STRICT_EVENTS", default=False)

# --- Speech-to-text (ElevenLabs Scribe) ---------------------------------------------------------
ELEVENLABS_BASE_URL = env.str("ELEVENLABS_BASE_URL", default="https://api.elevenlabs.io").rstrip("/")
ELEVENLABS_API_KEY = env.str("ELEVENLABS_API_KEY", default="")
ELEVENLABS_MODEL_ID = env.str("ELEVENLABS_MODEL_ID", default="scribe_v2")
ELEVENLABS_TIMEOUT_SECONDS = env.float("ELEVENLABS_TIMEOUT_SECONDS", default=600.0)
# Vendor calls in flight at once across every worker (the vendor limits concurrent requests).
ELEVENLABS_MAX_CONCURRENCY = env.int("ELEVENLABS_MAX_CONCURRENCY", default=10)
TRANSCRIPTION_LANGUAGE = env.str("TRANSCRIPTION_LANGUAGE", default="fr")
# Download the recording ourselves and upload it as `file` instead of passing `source_url`.
TRANSCRIPTION_UPLOAD_AUDIO = env.bool("TRANSCRIPTION_UPLOAD_AUDIO", default=False)
# That download goes through the webhooks' SSRF guard: comma-separated scheme://host[:port] origins
# trusted even on private addresses (an internal recording server, local simulators); any other host
# must resolve only to public addresses. Redirects: at most 3, each checked the same way.
RECORDING_ALLOWED_ORIGINS = env.list("RECORDING_ALLOWED_ORIGINS", default=[])
# Largest recording downloaded (bytes; larger fails permanently) and the download's total deadline
# (connect and every read: a server dripping bytes is cut there, and the download retried).
TRANSCRIPTION_MAX_AUDIO_BYTES = env.int("TRANSCRIPTION_MAX_AUDIO_BYTES", default=200 * 1024 * 1024)
TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS = env.float("TRANSCRIPTION_DOWNLOAD_TIMEOUT_SECONDS", default=120.0)
TRANSCRIPTION_BATCH_MAX = env.int("TRANSCRIPTION_BATCH_MAX", default=100)
# Transient vendor errors a recording retries (with backoff from this base, in seconds) before it fails.
TRANSCRIPTION_MAX_ERRORS = env.int("TRANSCRIPTION_MAX_ERRORS", default=3)
TRANSCRIPTION_RETRY_BASE_SECONDS = env.float("TRANSCRIPTION_RETRY_BASE_SECONDS", default=5.0)
# Reconciler: re-drive a run without progress for this long; end it after this long without progress.
TRANSCRIPTION_STALL_SECONDS = env.int("TRANSCRIPTION_STALL_SECONDS", default=900)
TRANSCRIPTION_DEADLINE_SECONDS = env.int("TRANSCRIPTION_DEADLINE_SECONDS", default=3600)
# Company names agents say when they introduce themselves (helps tell the agent from the client).
TRANSCRIPTION_COMPANY_NAMES = env.list("TRANSCRIPTION_COMPANY_NAMES", default=[])
# A batch without progress for this long ends, its pending items failed ("timed out").
BATCH_DEADLINE_SECONDS = env.int("BATCH_DEADLINE_SECONDS", default=7200)
# A batch item being started (its fiche fetched, its run or audit requested) is claimed for this long:
# another pass (the reconciler's) leaves it alone meanwhile, and takes it over after (a killed worker).
BATCH_ITEM_CLAIM_LEASE_SECONDS = env.int("BATCH_ITEM_CLAIM_LEASE_SECONDS", default=300)

# --- LLM (any OpenAI-compatible Chat Completions server) ------------------------------------------
LLM_BASE_URL = env.str("LLM_BASE_URL", default="https://api.openai.com/v1").rstrip("/")
LLM_API_KEY = env.str("LLM_API_KEY", default="")
LLM_MODEL = env.str("LLM_MODEL", default="gpt-4o-mini")
LLM_TIMEOUT_SECONDS = env.float("LLM_TIMEOUT_SECONDS", default=120.0)
LLM_MAX_RETRIES = env.int("LLM_MAX_RETRIES", default=2)
# LLM calls in flight at once across every worker.
LLM_MAX_CONCURRENCY = env.int("LLM_MAX_CONCURRENCY", default=8)
# LLM calls kept for audit steps: chats together hold at most LLM_MAX_CONCURRENCY minus these, so chats
# never starve audits (default a quarter, at least 1, and fewer than LLM_MAX_CONCURRENCY).
LLM_AUDIT_RESERVED_SLOTS = env.int(
    "LLM_AUDIT_RESERVED_SLOTS", default=min(max(1, LLM_MAX_CONCURRENCY // 4), LLM_MAX_CONCURRENCY - 1)
)
if not 0 <= LLM_AUDIT_RESERVED_SLOTS < LLM_MAX_CONCURRENCY:
    raise ImproperlyConfigured(
        f"LLM_AUDIT_RESERVED_SLOTS ({LLM_AUDIT_RESERVED_SLOTS}) must be at least 0 and below "
        f"LLM_MAX_CONCURRENCY ({LLM_MAX_CONCURRENCY})."
    )
# Answers one user may have streaming at once (each holds an LLM slot).
CHAT_MAX_STREAMS_PER_USER = env.int("CHAT_MAX_STREAMS_PER_USER", default=2)
# A web process told to stop (SIGTERM) drains: gunicorn (config/gunicorn.py, same variable) kills what still runs
# WEB_GRACEFUL_TIMEOUT seconds later; a streamed chat answer ends itself CHAT_STOP_SECONDS after the stop, before
# that (its partial answer stored as interrupted, the client told to ask again).
WEB_GRACEFUL_TIMEOUT = env.int("WEB_GRACEFUL_TIMEOUT", default=30)
CHAT_STOP_SECONDS = env.float("CHAT_STOP_SECONDS", default=max(1.0, WEB_GRACEFUL_TIMEOUT - 5.0))
if not 0 < CHAT_STOP_SECONDS < WEB_GRACEFUL_TIMEOUT:
    raise ImproperlyConfigured(
        f"CHAT_STOP_SECONDS ({CHAT_STOP_SECONDS}) must be above 0 and below WEB_GRACEFUL_TIMEOUT "
        f"({WEB_GRACEFUL_TIMEOUT}): a chat answer must end before gunicorn kills it."
    )
LLM_SEED = env.int("LLM_SEED", default=42)
# Tool calls a step may make in tools mode (use_rlm) before it must answer.
AUDIT_TOOLS_MAX_CALLS = env.int("AUDIT_TOOLS_MAX_CALLS", default=8)
# rapidfuzz alignment score (0-100) a quote needs to count as found in the transcript.
EVIDENCE_MATCH_THRESHOLD = env.float("EVIDENCE_MATCH_THRESHOLD", default=90.0)
# Transient LLM errors a step retries (backoff from this base, in seconds) before it fails.
AUDIT_STEP_MAX_ERRORS = env.int("AUDIT_STEP_MAX_ERRORS", default=3)
AUDIT_STEP_RETRY_BASE_SECONDS = env.float("AUDIT_STEP_RETRY_BASE_SECONDS", default=5.0)
# A step waits in place this long for an LLM slot before re-enqueueing itself.
AUDIT_LLM_SLOT_WAIT_SECONDS = env.float("AUDIT_LLM_SLOT_WAIT_SECONDS", default=30.0)
# Reconciler: re-drive an audit without progress for this long; fail one without progress for the
# deadline, or waiting for its transcripts longer than the transcription wait.
AUDIT_STALL_SECONDS = env.int("AUDIT_STALL_SECONDS", default=900)
AUDIT_DEADLINE_SECONDS = env.int("AUDIT_DEADLINE_SECONDS", default=3600)
AUDIT_TRANSCRIPTION_WAIT_SECONDS = env.int("AUDIT_TRANSCRIPTION_WAIT_SECONDS", default=3600)
# Most fiches in one POST /api/audits/batch.
AUDIT_BATCH_MAX = env.int("AUDIT_BATCH_MAX", default=100)

# --- The QA loop: disputes, trust per control point, review queues -----------------------------------
# An agent may dispute a verdict of their sale's audit this many days after it completed.
AUDIT_DISPUTE_WINDOW_DAYS = env.int("AUDIT_DISPUTE_WINDOW_DAYS", default=14)
# Trust per control point: over its latest AUDIT_TRUST_WINDOW reviews, kappa below AUDIT_TRUST_MIN_KAPPA
# with at least AUDIT_TRUST_MIN_REVIEWS of them withdraws the AI's trust (its verdicts become advice until
# a reviewer decides); kappa back at the minimum restores it.
AUDIT_TRUST_WINDOW = env.int("AUDIT_TRUST_WINDOW", default=50)
AUDIT_TRUST_MIN_KAPPA = env.float("AUDIT_TRUST_MIN_KAPPA", default=0.6)
AUDIT_TRUST_MIN_REVIEWS = env.int("AUDIT_TRUST_MIN_REVIEWS", default=20)
if not 1 <= AUDIT_TRUST_MIN_REVIEWS <= AUDIT_TRUST_WINDOW:
    raise ImproperlyConfigured(
        f"AUDIT_TRUST_MIN_REVIEWS ({AUDIT_TRUST_MIN_REVIEWS}) must be between 1 and AUDIT_TRUST_WINDOW "
        f"({AUDIT_TRUST_WINDOW})."
    )
# Evaluations of a config version: the default set is the most recent AUDIT_EVALUATION_FICHES fiches reviewers
# judged; at most AUDIT_EVALUATION_MAX_FICHES fiches named.
AUDIT_EVALUATION_FICHES = env.int("AUDIT_EVALUATION_FICHES", default=20)
AUDIT_EVALUATION_MAX_FICHES = env.int("AUDIT_EVALUATION_MAX_FICHES", default=50)
# A reviewer's claim on a queue item lasts this long unless renewed; then the item returns to the queue.
REVIEW_QUEUE_LEASE_SECONDS = env.int("REVIEW_QUEUE_LEASE_SECONDS", default=900)
# Beat re-enters the audits completed in the last REVIEW_QUEUE_SWEEP_HOURS (an entry lost with the broker),
# tops up the sample of closed weeks and returns expired claims.
REVIEW_QUEUE_SWEEP_HOURS = env.int("REVIEW_QUEUE_SWEEP_HOURS", default=48)

# --- Spending limits per user (LLM and speech-to-text money; core/limits.py `spending`) ----------
# Each kind: a rate ("30/m", "5/s", "off") and a burst (requests at once); over it, 429
# `{kind}_requests_throttled` with Retry-After; Redis down: 503 (fails closed). Checked after input
# validation and grants, before any side effect; a request refused after all (400, 403, 404, 409,
# 503 from the service) is refunded; an accepted one counts even when it reuses running work.
# POST /api/audits/run.
AUDIT_USER_RATE = env.str("AUDIT_USER_RATE", default="30/m")
AUDIT_USER_BURST = env.int("AUDIT_USER_BURST", default=10)
# Step and control-point reruns (one LLM call each).
RERUN_USER_RATE = env.str("RERUN_USER_RATE", default="30/m")
RERUN_USER_BURST = env.int("RERUN_USER_BURST", default=10)
# POST /api/transcriptions/{fiche_id}, forced or not (either can start vendor work).
TRANSCRIPTION_USER_RATE = env.str("TRANSCRIPTION_USER_RATE", default="30/m")
TRANSCRIPTION_USER_BURST = env.int("TRANSCRIPTION_USER_BURST", default=10)
# POST /api/audits/batch and /api/transcriptions/batch share one budget counted in fiches (a batch
# of 40 counts 40): by default one full batch at once, then 10 fiches a minute. A batch larger than
# the burst is refused (400 `batch_request_too_large`): keep it >= AUDIT_BATCH_MAX, TRANSCRIPTION_BATCH_MAX.
BATCH_USER_RATE = env.str("BATCH_USER_RATE", default="10/m")
BATCH_USER_BURST = env.int("BATCH_USER_BURST", default=max(AUDIT_BATCH_MAX, TRANSCRIPTION_BATCH_MAX))
# Chat messages (used by the chat app).
CHAT_USER_RATE = env.str("CHAT_USER_RATE", default="20/m")
CHAT_USER_BURST = env.int("CHAT_USER_BURST", default=5)

# --- Costs and daily budgets (the costs app) ------------------------------------------------------
# Every LLM call records its usage (prompt, completion and cached tokens, the model) and every speech-to-text
# call its audio seconds; cost is computed from these prices, never stored (a price change re-prices history).
# LLM_PRICES: JSON {"<model>": {"input": <per million prompt tokens>, "cached_input": <per million cached
# prompt tokens>, "output": <per million completion tokens>}}; cached tokens (part of the prompt tokens, as
# providers report them) are billed at cached_input (default: input). A model not listed is priced at
# LLM_DEFAULT_PRICE (and flagged `priced_by_default` in the costs API).
COST_CURRENCY = env.str("COST_CURRENCY", default="USD")
_DEFAULT_LLM_PRICES = {
    "sim-judge-1": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "gpt-4o-mini": {"input": 0.15, "cached_input": 0.075, "output": 0.60},
    "gpt-4o": {"input": 2.50, "cached_input": 1.25, "output": 10.00},
}
LLM_PRICES = env.json("LLM_PRICES", default=_DEFAULT_LLM_PRICES)
LLM_DEFAULT_PRICE = env.json("LLM_DEFAULT_PRICE", default={"input": 2.50, "cached_input": 1.25, "output": 10.00})
STT_PRICE_PER_HOUR = env.str("STT_PRICE_PER_HOUR", default="0.40")


def _money_setting(name: str, value: object, *, allow_none: bool = False) -> Decimal | None:
    """A non-negative amount; with ``allow_none`` empty or 0 is None (no budget)."""
    text = str(value if value is not None else "").strip()
    if allow_none and text in ("", "0", "0.0"):
        return None
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be an amount in COST_CURRENCY, got {value!r}.") from None
    if not amount.is_finite() or amount < 0:
        raise ImproperlyConfigured(f"{name} must be a non-negative amount, got {value!r}.")
    return None if allow_none and amount == 0 else amount


def _check_price(name: str, price: object) -> None:
    keys = set(price) if isinstance(price, dict) else set()
    if not isinstance(price, dict) or not {"input", "output"} <= keys or keys - {"input", "cached_input", "output"}:
        raise ImproperlyConfigured(f"{name} must be {{'input': n, 'cached_input': n, 'output': n}}, got {price!r}.")
    for key, value in price.items():
        _money_setting(f"{name}.{key}", value)


if not isinstance(LLM_PRICES, dict):
    raise ImproperlyConfigured("LLM_PRICES must be a JSON object of model → prices.")
for _model, _price in LLM_PRICES.items():
    _check_price(f"LLM_PRICES[{_model!r}]", _price)
_check_price("LLM_DEFAULT_PRICE", LLM_DEFAULT_PRICE)
_money_setting("STT_PRICE_PER_HOUR", STT_PRICE_PER_HOUR)
# Daily budgets in COST_CURRENCY (empty or 0: none), global and per user (the user the work is for), for the
# LLM (audits, reruns, chat) and speech-to-text. The day is TIME_ZONE's. At the limit, new work waits for the
# next day (BUDGET_MODE=wait: audits `waiting_budget`, transcription runs pending) or is refused
# (BUDGET_MODE=refuse: 429 `budget_exhausted`, background work fails with the reason); chat messages and
# reruns are refused either way. Work already started finishes (the overshoot is bounded by work in flight).
BUDGET_LLM_DAILY = _money_setting("BUDGET_LLM_DAILY", env.str("BUDGET_LLM_DAILY", default=""), allow_none=True)
BUDGET_LLM_USER_DAILY = _money_setting(
    "BUDGET_LLM_USER_DAILY", env.str("BUDGET_LLM_USER_DAILY", default=""), allow_none=True
)
BUDGET_STT_DAILY = _money_setting("BUDGET_STT_DAILY", env.str("BUDGET_STT_DAILY", default=""), allow_none=True)
BUDGET_STT_USER_DAILY = _money_setting(
    "BUDGET_STT_USER_DAILY", env.str("BUDGET_STT_USER_DAILY", default=""), allow_none=True
)
BUDGET_MODE = env.str("BUDGET_MODE", default="wait").strip().lower()
if BUDGET_MODE not in ("wait", "refuse"):
    raise ImproperlyConfigured(f"BUDGET_MODE must be 'wait' or 'refuse', got {BUDGET_MODE!r}.")

# --- Metrics (ops) ------------------------------------------------------------------------------
# GET /metrics (Prometheus) answers only with "Authorization: Bearer <METRICS_TOKEN>"; unset: metrics are off (404).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Every process of a host (gunicorn workers, Celery pools) records into this directory and /metrics (or
# `manage.py metrics_server` on a worker host) adds them up. Empty it when the host's processes start.
# Unset: each process keeps its own metrics (fine for one process; wrong for gunicorn with several workers).
METRICS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
# django-prometheus: latency buckets of HTTP requests (seconds).
PROMETHEUS_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, float("inf"))
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- Personal data (privacy) -----------------------------------------------------------------
# What goes to the LLM (audits, reruns, chat, tools-mode results) is redacted: card numbers, IBAN, NIR,
# phone numbers, e-mails, SMS/OTP codes, dates of birth and announced addresses become typed placeholders
# ([CARTE], [IBAN], ...). Card numbers and codes are redacted at ingestion whatever this says (never stored).
LLM_REDACT_PII = env.bool("LLM_REDACT_PII", default=True)
# Retention per kind of data, in days (0 = kept forever). A beat task purges what is due, in batches.
# Transcripts and their words: as long as the call recordings (2 years after the sale, décret 2022-34).
RETENTION_TRANSCRIPT_DAYS = env.int("RETENTION_TRANSCRIPT_DAYS", default=730)
# The audits' quotes of the calls (verdicts and scores stay: the company's compliance record).
RETENTION_AUDIT_QUOTE_DAYS = env.int("RETENTION_AUDIT_QUOTE_DAYS", default=730)
RETENTION_CHAT_DAYS = env.int("RETENTION_CHAT_DAYS", default=180)
# Bodies of webhook deliveries and of their attempts' responses (delivered ones are deleted after
# WEBHOOK_RETENTION_DAYS already; this blanks the bodies of every delivery, failed ones included).
RETENTION_WEBHOOK_BODY_DAYS = env.int("RETENTION_WEBHOOK_BODY_DAYS", default=30)
RETENTION_WORKFLOW_LOG_DAYS = env.int("RETENTION_WORKFLOW_LOG_DAYS", default=90)
# The timeline cache (a fiche's conversation derived from its transcripts, in Redis): its TTL in seconds.
RETENTION_TIMELINE_CACHE_SECONDS = env.int("RETENTION_TIMELINE_CACHE_SECONDS", default=3600)
# One purge statement touches at most this many rows; one run does at most this many statements per kind.
RETENTION_PURGE_BATCH_SIZE = env.int("RETENTION_PURGE_BATCH_SIZE", default=500)
RETENTION_PURGE_MAX_BATCHES = env.int("RETENTION_PURGE_MAX_BATCHES", default=200)

# --- Automation ----------------------------------------------------------------------------------
# A run skips revalidating its range's sales list when a fiche of that range was revalidated this recently.
AUTOMATION_REVALIDATION_COOLDOWN_MS = env.int("AUTOMATION_REVALIDATION_COOLDOWN_MS", default=30 * 60 * 1000)
# Fiches with more recordings than this are ignored (0 = no limit; a schedule's maxRecordingsPerFiche wins).
AUTOMATION_MAX_RECORDINGS_PER_FICHE = env.int("AUTOMATION_MAX_RECORDINGS_PER_FICHE", default=0)
# Most fiches one run takes (a schedule's maxFiches may lower it).
AUTOMATION_MAX_FICHES = env.int("AUTOMATION_MAX_FICHES", default=2000)
# Reconciler: re-drive a run without progress for this long; end it failed after the deadline without progress.
AUTOMATION_STALL_SECONDS = env.int("AUTOMATION_STALL_SECONDS", default=900)
AUTOMATION_DEADLINE_SECONDS = env.int("AUTOMATION_DEADLINE_SECONDS", default=6 * 3600)

# --- Email (automation notifications): sent only when SMTP_HOST is set; otherwise logged and skipped.
SMTP_HOST = env.str("SMTP_HOST", default="")
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = SMTP_HOST or "localhost"
EMAIL_PORT = env.int("SMTP_PORT", default=587)
EMAIL_HOST_USER = env.str("SMTP_USER", default="")
EMAIL_HOST_PASSWORD = env.str("SMTP_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("SMTP_USE_TLS", default=True)
EMAIL_USE_SSL = env.bool("SMTP_USE_SSL", default=False)
EMAIL_TIMEOUT = env.int("SMTP_TIMEOUT_SECONDS", default=10)
DEFAULT_FROM_EMAIL = env.str("SMTP_FROM", default="automation@localhost")

# --- i18n, static -------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="Europe/Paris")
CELERY_TIMEZONE = TIME_ZONE
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security (production) -------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Production serves HTTPS only (behind a TLS-terminating proxy that sets X-Forwarded-Proto). The
# health check stays reachable over plain HTTP for load balancers.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^api/health$", r"^metrics$"]
# HSTS: start small (the default, 60 s) and raise it (e.g. 31536000) once HTTPS is known to work.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Preload-list submission is a deliberate, hard-to-undo choice for the operator, not a default.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"

# --- Logging ------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
LOG_FORMAT = env.str("LOG_FORMAT", default="text").lower()
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', got {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logging.RequestIdFilter"}},
    "formatters": {
        "structured": {"()": "core.logging.StructuredFormatter", "fmt": LOG_FORMAT},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "structured",
            "filters": ["request_id"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # django.server duplicates our own access log line under runserver.
        "django.server": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "celery": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
    },
}


def _refuse_insecure_production_settings() -> None:
    """With DEBUG off, refuse to start on a missing or default secret."""
    if DEBUG:
        return
    problems = []
    if not env.str("SECRET_KEY", default=""):
        problems.append("SECRET_KEY is not set")
    elif SECRET_KEY == INSECURE_SECRET_KEY or SECRET_KEY.startswith("django-insecure"):
        problems.append("SECRET_KEY is the insecure development default")
    elif len(SECRET_KEY) < 32:
        problems.append("SECRET_KEY is shorter than 32 characters")
    if "*" in ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS contains '*'")
    if problems:
        raise ImproperlyConfigured(
            "Refusing to start with DEBUG=false: "
            + "; ".join(problems)
            + '. Set a long random SECRET_KEY (e.g. `python -c "import secrets; '
            'print(secrets.token_urlsafe(50))"`) and explicit ALLOWED_HOSTS.'
        )


_refuse_insecure_production_settings()
