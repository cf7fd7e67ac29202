"""Settings for the demo project, read once from the environment (and `.env`)."""

from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from tasks.queues import CELERY_QUEUES, CELERY_ROUTES, DUMP  # the app's topology (backups.queues)

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY is not set (set it, or DJANGO_DEBUG=1 for local use).")
    SECRET_KEY = "insecure-local-development-key"
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[".localhost", "localhost", "127.0.0.1"])

# --- HTTPS: on by default without DEBUG (`check --deploy` passes); DJANGO_HTTPS=0 serves plain HTTP on purpose ---
HTTPS = env.bool("DJANGO_HTTPS", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_REDIRECT_EXEMPT = env.list("DJANGO_SECURE_REDIRECT_EXEMPT", default=[])  # /healthz, /readyz never redirect
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=365 * 86400 if HTTPS else 0)
# Tenants are served on subdomains of the public domain, by this same app: HSTS covers them too.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
# Preloading binds the domain (and its subdomains) to HTTPS in browsers for months: the domain owner's choice, so
# not a default, and `check --deploy`'s reminder of it (W021) is silenced until it is chosen.
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=HTTPS)
# The TLS-terminating proxy's header saying the client's request was HTTPS ("HEADER,value"; empty: none).
# The proxy must set (or strip) it on every request, or a client could claim HTTPS itself.
_proxy_ssl_header = env.list("DJANGO_SECURE_PROXY_SSL_HEADER",
                             default=["HTTP_X_FORWARDED_PROTO", "https"] if HTTPS else [])
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured("DJANGO_SECURE_PROXY_SSL_HEADER is HEADER,value (e.g. HTTP_X_FORWARDED_PROTO,https).")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None

# --- tenancy --------------------------------------------------------------
SHARED_APPS = [
    "backups.cli",  # before django_tenants: `clone_tenant` is tenant-backups' (from a backup), not django-tenants'
    "django_tenants",
    "tenants",
    "backups",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin.apps.SimpleAdminConfig",  # admin modules load with urls_public, not in every command
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "accounts",
    "rest_framework",
    # Also tenant apps (below). Their tables in public stay empty (no API on the public domain), but deleting an
    # operator (a public user) cascades into them: without them it failed, "relation authtoken_token does not exist".
    "rest_framework.authtoken",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc served from our static files, never a CDN
    "axes",  # admin login lockout (counts in the cache; its tables, unused, are migrated in public only)
]
TENANT_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "accounts",
    "clinic",
    "rest_framework.authtoken",  # API tokens live in each tenant's schema, beside its users
    "rest_framework_simplejwt.token_blacklist",  # used and revoked refresh tokens, beside the users too
]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]

TENANT_MODEL = "tenants.Clinica"
TENANT_DOMAIN_MODEL = "tenants.Domain"
PUBLIC_SCHEMA_URLCONF = "project.urls_public"
ROOT_URLCONF = "project.urls_tenants"
DATABASE_ROUTERS = ("django_tenants.routers.TenantSyncRouter",)
AUTH_USER_MODEL = "accounts.User"
# axes first: a locked-out admin login is refused before the password is hashed (about 0.8 s of CPU each).
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

MIDDLEWARE = [
    "backups.ops.middleware.HealthProbeMiddleware",  # /healthz and /readyz on any host, before the tenant lookup
    "django_tenants.middleware.main.TenantMainMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files under gunicorn (after `collectstatic`)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # a locked-out admin login answers axes' 429
]
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
WSGI_APPLICATION = "project.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/tenant_backups"),
}
DATABASES["default"]["ENGINE"] = "django_tenants.postgresql_backend"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
# Each clinic's files (X-rays, invoices) the way django-tenants documents it: MEDIA_ROOT/<schema>/...; backed up with
# the clinic (backups.backup.files). MEDIA_STORAGE=s3: the same per tenant on S3 (project.media.TenantS3Storage,
# bucket MEDIA_S3_BUCKET, the AWS_* endpoint and keys).
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "var" / "media")))
MEDIA_URL = "media/"
MEDIA_S3_BUCKET = env("MEDIA_S3_BUCKET", default="")
STORAGES = {
    "default": {"BACKEND": "project.media.TenantS3Storage" if env("MEDIA_STORAGE", default="") == "s3"
                else "django_tenants.files.storage.TenantFileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

# Overdue-backup alerts are mailed to ADMINS (none set: only logged).
ADMINS = [("", address) for address in env.list("DJANGO_ADMINS", default=[])]
SERVER_EMAIL = env("DJANGO_SERVER_EMAIL", default="tenant-backups@localhost")
EMAIL_SUBJECT_PREFIX = "[tenant-backups] "
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))

# --- logs, errors, metrics and alerts --------------------------------------------------------------
from backups.ops.observability import logging_config, sentry_init  # noqa: E402 - no app registry needed

# One handler, on the root logger: every line is printed once, as text or as one JSON object (LOG_FORMAT=json).
LOGGING = logging_config(log_format=env("LOG_FORMAT", default="text"), level=env("LOG_LEVEL", default="INFO"),
                         backups_level=env("BACKUPS_LOG_LEVEL", default="INFO"))
# Celery workers keep LOGGING (its handler and format) instead of replacing the root logger's handlers.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Errors of web and workers go to Sentry when SENTRY_DSN is set (sentry-sdk is not even imported otherwise).
SENTRY_DSN = env("SENTRY_DSN", default="")
sentry_init(dsn=SENTRY_DSN, environment=env("SENTRY_ENVIRONMENT", default=""),
            release=env("SENTRY_RELEASE", default=""),
            traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0))
# /metrics on the public domain answers `Authorization: Bearer <token>` only; empty: metrics are off (404).
BACKUPS_METRICS_TOKEN = env("BACKUPS_METRICS_TOKEN", default="")
BACKUPS_HEALTH_TIMEOUT_SECONDS = env.float("BACKUPS_HEALTH_TIMEOUT_SECONDS", default=3.0)
# Alerts (overdue tenants, failed drills, damaged backups) go to DJANGO_ADMINS and, if set, this chat webhook.
BACKUPS_ALERT_WEBHOOK_URL = env("BACKUPS_ALERT_WEBHOOK_URL", default="")
BACKUPS_ALERT_WEBHOOK_TIMEOUT_SECONDS = env.float("BACKUPS_ALERT_WEBHOOK_TIMEOUT_SECONDS", default=5.0)

# --- admin login lockout (django-axes; counts in the shared cache, so across every web process) -----------------------
AXES_HANDLER = "project.admin_login.AdminLoginCacheHandler"  # admin-site logins only: the API has its own throttle
AXES_ONLY_ADMIN_SITE = True
AXES_CACHE = "default"
AXES_ENABLE_ADMIN = False  # the cache handler writes no AccessAttempt rows: no empty admin pages
AXES_VERBOSE = False  # no start-up banner in every command's output; lockouts are still logged (WARNING)
AXES_FAILURE_LIMIT = env.int("ADMIN_LOGIN_FAILURE_LIMIT", default=5)
# Each name alone locks out (a user from every address, an address for every user); "a+b" locks the pair only.
AXES_LOCKOUT_PARAMETERS = [p.split("+") if "+" in p else p
                           for p in env.list("ADMIN_LOGIN_LOCKOUT_PARAMETERS", default=["username", "ip_address"])]
AXES_COOLOFF_TIME = env.int("ADMIN_LOGIN_COOLOFF_MINUTES", default=15) / 60  # hours, as axes reads a number
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "backups.api.throttling.client_ident"  # REMOTE_ADDR, or X-Forwarded-For per API_NUM_PROXIES

# --- backups --------------------------------------------------------------
BACKUPS_STORAGE = env("BACKUPS_STORAGE", default="local")
BACKUPS_LOCAL_ROOT = Path(env("BACKUPS_LOCAL_ROOT", default=str(BASE_DIR / "var" / "backups")))
BACKUPS_DEFAULT_FORMAT = env("BACKUPS_DEFAULT_FORMAT", default="sql")
BACKUPS_COMPRESSION = env("BACKUPS_COMPRESSION", default="zstd")
BACKUPS_ZSTD_LEVEL = env.int("BACKUPS_ZSTD_LEVEL", default=3)
BACKUPS_ZSTD_THREADS = env.int("BACKUPS_ZSTD_THREADS", default=1)
BACKUPS_GZIP_LEVEL = env.int("BACKUPS_GZIP_LEVEL", default=6)
BACKUPS_PG_BIN_DIR = env("BACKUPS_PG_BIN_DIR", default="")
BACKUPS_PG_DUMP_OPTIONS = env("BACKUPS_PG_DUMP_OPTIONS", default="-c enable_mergejoin=off -c jit=off")  # backups.conf
BACKUPS_RESTORE_PRIVILEGES = env.bool("BACKUPS_RESTORE_PRIVILEGES", default=True)  # see backups.postgres.privileges
BACKUPS_DUMP_SOFT_TIME_LIMIT = env.int("BACKUPS_DUMP_SOFT_TIME_LIMIT", default=3 * 3600)
BACKUPS_DUMP_TIME_LIMIT = env.int("BACKUPS_DUMP_TIME_LIMIT", default=BACKUPS_DUMP_SOFT_TIME_LIMIT + 600)
BACKUPS_TASK_MAX_RETRIES = env.int("BACKUPS_TASK_MAX_RETRIES", default=3)
BACKUPS_TASK_RETRY_DELAY = env.int("BACKUPS_TASK_RETRY_DELAY", default=60)
BACKUPS_TASK_RETRY_MAX_DELAY = env.int("BACKUPS_TASK_RETRY_MAX_DELAY", default=900)
# An automatic backup failing for a transient cause (database restart, storage 5xx, full or read-only disk)
# is tried again with doubling waits that add up to at most this, then fails with its message.
BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS = env.int("BACKUPS_TRANSIENT_RETRY_WINDOW_SECONDS", default=2 * 3600)
BACKUPS_AGE_RECIPIENTS = env("BACKUPS_AGE_RECIPIENTS", default="")
BACKUPS_AGE_IDENTITY_FILE = env("BACKUPS_AGE_IDENTITY_FILE", default="")
# Manifests in the storage are believed only with this deployment's HMAC (default: derived from SECRET_KEY).
BACKUPS_MANIFEST_KEY = env("BACKUPS_MANIFEST_KEY", default="")
BACKUPS_MANIFEST_OLD_KEYS = env.list("BACKUPS_MANIFEST_OLD_KEYS", default=[])
BACKUPS_SPOOL_DIR = env("BACKUPS_SPOOL_DIR", default="")  # where restores check stored bytes before use
BACKUPS_DELETED_TENANT_KEEP_DAYS = env.int("BACKUPS_DELETED_TENANT_KEEP_DAYS", default=90)
BACKUPS_TICK_SECONDS = env.int("BACKUPS_TICK_SECONDS", default=300)
BACKUPS_REAPER_SECONDS = env.int("BACKUPS_REAPER_SECONDS", default=600)
BACKUPS_SPREAD_SECONDS = env.int("BACKUPS_SPREAD_SECONDS", default=1800)
BACKUPS_DISPATCH_BATCH = env.int("BACKUPS_DISPATCH_BATCH", default=5000)
BACKUPS_FANOUT_BATCH = env.int("BACKUPS_FANOUT_BATCH", default=100)
BACKUPS_MAX_CONCURRENT_DUMPS = env.int("BACKUPS_MAX_CONCURRENT_DUMPS", default=4)
BACKUPS_DUMP_SLOT_WAIT_SECONDS = env.int("BACKUPS_DUMP_SLOT_WAIT_SECONDS", default=600)
# Where advisory locks are held (a direct, non-pooled URL; empty: DATABASES). A secret: from the environment only.
BACKUPS_LOCK_DATABASE_URL = env("BACKUPS_LOCK_DATABASE_URL", default="")
BACKUPS_TENANT_LOCK_WAIT_SECONDS = env.int("BACKUPS_TENANT_LOCK_WAIT_SECONDS", default=600)
BACKUPS_LOCK_WAIT_SECONDS = env.float("BACKUPS_LOCK_WAIT_SECONDS", default=60)  # table locks; see backups.conf
BACKUPS_MANUAL_RETENTION_DAYS = env.int("BACKUPS_MANUAL_RETENTION_DAYS", default=None)
BACKUPS_PRE_RESTORE_RETENTION_DAYS = env.int("BACKUPS_PRE_RESTORE_RETENTION_DAYS", default=14)  # None: keep
# Side copies (restore_tenant --into) are dropped after this many days; clones are scrubbed by the anonymizer
# (the demo's scrubs patients' names, e-mails and phones; empty: clones keep the data as backed up).
BACKUPS_SIDE_COPY_KEEP_DAYS = env.int("BACKUPS_SIDE_COPY_KEEP_DAYS", default=7)
BACKUPS_CLONE_ANONYMIZER = env("BACKUPS_CLONE_ANONYMIZER", default="clinic.anonymize.scrub_patients")
BACKUPS_QUEUED_TIMEOUT_SECONDS = env.int("BACKUPS_QUEUED_TIMEOUT_SECONDS", default=6 * 3600)
BACKUPS_RUNNING_GRACE_SECONDS = env.int("BACKUPS_RUNNING_GRACE_SECONDS", default=600)
# The reaper resends a `running` record whose lock is free (its worker died) once it started this long ago,
# and a `queued` one whose message is in no queue (a broker restart lost it) once it was sent this long ago.
BACKUPS_ORPHAN_GRACE_SECONDS = env.int("BACKUPS_ORPHAN_GRACE_SECONDS", default=120)
BACKUPS_LOST_MESSAGE_SECONDS = env.int("BACKUPS_LOST_MESSAGE_SECONDS", default=300)
BACKUPS_OVERDUE_GRACE_SECONDS = env.int("BACKUPS_OVERDUE_GRACE_SECONDS", default=4 * 3600)
BACKUPS_OVERDUE_CHECK_SECONDS = env.int("BACKUPS_OVERDUE_CHECK_SECONDS", default=900)
BACKUPS_DRILL_SECONDS = env.int("BACKUPS_DRILL_SECONDS", default=86400)
BACKUPS_DRILL_SAMPLE = env.int("BACKUPS_DRILL_SAMPLE", default=3)
BACKUPS_RECONCILE_SECONDS = env.int("BACKUPS_RECONCILE_SECONDS", default=86400)
BACKUPS_BATCH_SIZE = env.int("BACKUPS_BATCH_SIZE", default=500)  # due tenants per pg_dump; 1: one by one
BACKUPS_BATCH_MIN_SIZE = env.int("BACKUPS_BATCH_MIN_SIZE", default=10)
BACKUPS_BATCH_LOCK_SHARE = env.float("BACKUPS_BATCH_LOCK_SHARE", default=0.5)
BACKUPS_BATCH_TABLES_PER_TENANT = env.int("BACKUPS_BATCH_TABLES_PER_TENANT", default=30)
BACKUPS_BATCH_MAX_SPOOL_BYTES = env.int("BACKUPS_BATCH_MAX_SPOOL_BYTES", default=2 << 30)

# --- celery and the shared cache ---------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Shared by every web process: API throttles and revoked JWT sessions must count across processes.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="tenant-backups"),
    },
}
CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_QUEUES = CELERY_QUEUES
CELERY_TASK_ROUTES = CELERY_ROUTES
CELERY_TASK_DEFAULT_QUEUE = DUMP
CELERY_TASK_CREATE_MISSING_QUEUES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# kombu 5.7.0's Redis transport stops a worker for good when Redis restarts while it runs a late-acked task
# (AttributeError 'NoneType' object has no attribute 'hostname'); backups.ops.redis_transport.Transport is that
# transport with the fix (its docstring says why). CELERY_BROKER_TRANSPORT=redis brings back kombu's own.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = env("CELERY_BROKER_TRANSPORT", default="backups.ops.redis_transport:Transport")
    if CELERY_BROKER_URL.startswith("rediss://") and CELERY_BROKER_TRANSPORT != "redis":
        CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": "required"}  # a named transport skips kombu's rediss default
# A running backup goes on through a broker outage (its record's lock makes any redelivery a no-op).
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# The visibility timeout must outlast the longest task, or Redis redelivers it mid-run.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=BACKUPS_DUMP_TIME_LIMIT + 1800),
}
if env("CELERY_QUEUE_PREFIX", default=""):
    CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = env("CELERY_QUEUE_PREFIX")
if CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] <= BACKUPS_DUMP_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_VISIBILITY_TIMEOUT must be longer than BACKUPS_DUMP_TIME_LIMIT.")
if BACKUPS_DUMP_SOFT_TIME_LIMIT >= BACKUPS_DUMP_TIME_LIMIT:
    raise ImproperlyConfigured("BACKUPS_DUMP_SOFT_TIME_LIMIT must be shorter than BACKUPS_DUMP_TIME_LIMIT.")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

# --- S3 storage (BACKUPS_STORAGE=s3; also MinIO, R2, Ceph, Supabase's S3 endpoint) ---------------
# Read by backups.storage.s3.S3Storage.from_settings(); defaults mirror its SETTINGS_DEFAULTS.
# Empty credentials fall back to boto3's own chain (environment, ~/.aws, instance or task role).
AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default="")
AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default="")
AWS_SESSION_TOKEN = env("AWS_SESSION_TOKEN", default="")
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")  # required for s3: check() names it
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default="us-east-1")
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default="")  # empty: AWS itself
AWS_S3_KEY_PREFIX = env("AWS_S3_KEY_PREFIX", default="backups/")  # objects are <prefix><schema>/<file>
AWS_S3_SSE = env("AWS_S3_SSE", default="")  # empty: the bucket's default encryption | AES256 | aws:kms
AWS_S3_SSE_KMS_KEY_ID = env("AWS_S3_SSE_KMS_KEY_ID", default="")  # with aws:kms; empty: the AWS-managed key
AWS_S3_STORAGE_CLASS = env("AWS_S3_STORAGE_CLASS", default="STANDARD")
AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", default="auto")  # auto | path (MinIO) | virtual
# when_required for stores that reject recent boto3's default CRC32 checksums (older MinIO, Ceph, some R2 setups).
AWS_S3_REQUEST_CHECKSUM_CALCULATION = env("AWS_S3_REQUEST_CHECKSUM_CALCULATION", default="when_supported")
AWS_S3_CONNECT_TIMEOUT = env.float("AWS_S3_CONNECT_TIMEOUT", default=10.0)
AWS_S3_READ_TIMEOUT = env.float("AWS_S3_READ_TIMEOUT", default=60.0)
AWS_S3_MAX_ATTEMPTS = env.int("AWS_S3_MAX_ATTEMPTS", default=5)  # all attempts, first included ("standard" retries)
# GOVERNANCE | COMPLIANCE: every object locked (S3 Object Lock) as long as retention keeps it; empty: no lock.
AWS_S3_OBJECT_LOCK_MODE = env("AWS_S3_OBJECT_LOCK_MODE", default="")
BACKUPS_OBJECT_LOCK_DAYS = env.float("BACKUPS_OBJECT_LOCK_DAYS", default=7.0)  # shortest lock; rolling renewal
# Multipart part size: memory per upload is about one part; max object size = part size * 10,000.
BACKUPS_S3_PART_SIZE = env.int("BACKUPS_S3_PART_SIZE", default=16 * 1024 * 1024)
BACKUPS_URL_MAX_EXPIRY = env.int("BACKUPS_URL_MAX_EXPIRY", default=7 * 24 * 3600)  # S3 caps links at 7 days
# --- end S3 storage ---------------------------------------------------------------------------------

# --- A second target (issue 28): BACKUPS_COPY_STORAGE=local|s3|supabase, empty for none --------------
# Its settings mirror the primary's with BACKUPS_COPY_ in front (BACKUPS_COPY_LOCAL_ROOT,
# BACKUPS_COPY_AWS_STORAGE_BUCKET_NAME, BACKUPS_COPY_SUPABASE_URL, BACKUPS_COPY_KEEP_MONTHLY, ...): every one set in
# the environment is passed as given (backups.conf brings it to its type and knows its default).
BACKUPS_TENANT_KEYS = env.bool("BACKUPS_TENANT_KEYS", default=True)  # a data key per tenant identity (erasure)
for _name, _value in env.ENVIRON.items():
    if _name.startswith("BACKUPS_COPY_"):
        globals()[_name] = _value

# --- Supabase storage (BACKUPS_STORAGE=supabase) ----------------------------------------------------
# Read by backups.storage.supabase.SupabaseStorage.from_settings(); defaults mirror its SETTINGS_DEFAULTS.
# Objects are <bucket>/<schema>/<file>; check() (and the first write) creates the bucket, private, if missing.
SUPABASE_URL = env("SUPABASE_URL", default="")  # the project URL, https://<project>.supabase.co
SUPABASE_KEY = env("SUPABASE_KEY", default="")  # the service_role (secret) key: never the anon key
SUPABASE_BUCKET = env("SUPABASE_BUCKET", default="backups")
# Set all three to stream every write through Supabase's S3 endpoint (multipart: flat memory, no size cap but the
# project's upload size limit). Keys come from the dashboard: Storage > Settings > S3 access keys.
SUPABASE_S3_ENDPOINT = env("SUPABASE_S3_ENDPOINT", default="")  # https://<project>.supabase.co/storage/v1/s3
SUPABASE_S3_REGION = env("SUPABASE_S3_REGION", default="us-east-1")  # the project's region, as shown beside the keys
SUPABASE_S3_ACCESS_KEY_ID = env("SUPABASE_S3_ACCESS_KEY_ID", default="")
SUPABASE_S3_SECRET_ACCESS_KEY = env("SUPABASE_S3_SECRET_ACCESS_KEY", default="")
# Without the S3 settings, writes use the standard upload, capped at this many bytes (Supabase's default 50 MiB);
# a larger backup fails, naming the S3 settings. Multipart part size is BACKUPS_S3_PART_SIZE; links obey
# BACKUPS_URL_MAX_EXPIRY.
SUPABASE_UPLOAD_LIMIT = env.int("SUPABASE_UPLOAD_LIMIT", default=50 * 1024 * 1024)
# --- end Supabase storage ---------------------------------------------------------------------------

# --- API (backups.api on tenant domains, its auth endpoints at backups.api.auth_urls) -----------------------------
import hashlib  # noqa: E402 - kept inside the API block
from datetime import timedelta  # noqa: E402

# The backups API sets its own DRF classes on its views (backups.api.defaults); these are the project's
# defaults for any other DRF view, kept the same so nothing falls back to Basic/Session auth or HTML.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "backups.api.authentication.TenantJWTAuthentication",
        "backups.api.authentication.TenantTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["backups.api.parsers.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "backups.api.exceptions.api_exception_handler",
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": None,
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
}
BACKUPS_API_THROTTLE_RATES = {
    "anon": env("API_THROTTLE_ANON", default="120/min"),
    "user": env("API_THROTTLE_USER", default="1200/min"),
    "auth": env("API_THROTTLE_AUTH", default="30/min"),
    "schema": env("API_THROTTLE_SCHEMA", default="60/min"),  # /api/schema/, per tenant and address
}
# Proxies in front of the app: X-Forwarded-For is trusted only that deep (0: never).
BACKUPS_API_NUM_PROXIES = env.int("API_NUM_PROXIES", default=0)
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("API_JWT_ACCESS_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("API_JWT_REFRESH_DAYS", default=1)),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
    # Each refresh answers a new refresh token and uses up the one sent (backups.api.tokens.rotate).
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # A key of its own, derived from SECRET_KEY (and long enough for HS256 whatever SECRET_KEY's length).
    "SIGNING_KEY": env("API_JWT_SIGNING_KEY", default=hashlib.sha256(b"jwt:" + SECRET_KEY.encode()).hexdigest()),
}
SPECTACULAR_SETTINGS = {
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files: /api/docs/ works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "tenant-backups API",
    "DESCRIPTION": "Backups of the tenant whose domain serves the request: create, list, download, restore, schedule.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "BackupStatusEnum": "backups.models.BackupRecord.Status",
        "BackupTypeEnum": "backups.models.BackupRecord.Type",
        "BackupFormatEnum": "backups.models.BackupRecord.Format",
        "BackupCompressionEnum": "backups.models.BackupRecord.Compression",
    },
}
# Who counts as a tenant admin: dotted path of a callable (user, tenant) -> bool. The app's default is any
# staff user or superuser of the tenant; the demo's clinics use their users' ADMIN role.
BACKUPS_IS_TENANT_ADMIN = env("BACKUPS_IS_TENANT_ADMIN", default="accounts.roles.is_tenant_admin")
BACKUPS_SYNC_WAIT_SECONDS = env.float("BACKUPS_SYNC_WAIT_SECONDS", default=30)  # create/?download=true waits this long
BACKUPS_MANUAL_PER_HOUR = env.int("BACKUPS_MANUAL_PER_HOUR", default=6)  # manual backups per tenant per hour
BACKUPS_API_COMPAT = env.bool("BACKUPS_API_COMPAT", default=False)  # the source documents' answers (README)
BACKUPS_API_COMPAT_HISTORY_LIMIT = env.int("BACKUPS_API_COMPAT_HISTORY_LIMIT", default=100)
BACKUPS_RESTORES_PER_HOUR = env.int("BACKUPS_RESTORES_PER_HOUR", default=4)  # API replace restores, the same
BACKUPS_VERIFIES_PER_HOUR = env.int("BACKUPS_VERIFIES_PER_HOUR", default=6)  # API verify drills, the same
# --- end API ---------------------------------------------------------------------------------------------
