"""Django settings for the drf-chunked-upload test server.

All state (SQLite database, uploaded files, spooled request bodies) lives in
the directory named by the ``DRF_SERVER_DIR`` environment variable, so every
server instance is isolated in its own temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

try:
    SERVER_DIR = Path(os.environ["DRF_SERVER_DIR"]).resolve()
except KeyError:
    raise ImproperlyConfigured("DRF_SERVER_DIR must name the server's state directory") from None

# Throw-away server bound to loopback: a fixed key is fine.
SECRET_KEY = "drf-chunked-upload-test-server-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_chunked_upload",
]
# No sessions/CSRF/admin: clients authenticate with tokens only.
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.drf_server.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SERVER_DIR / "db.sqlite3",
        "OPTIONS": {
            # The WSGI server is threaded: wait for locks instead of failing
            # with "database is locked", and let readers run beside a writer.
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL;",
        },
    }
}

MEDIA_ROOT = SERVER_DIR / "media"
MEDIA_URL = "/media/"
FILE_UPLOAD_TEMP_DIR = SERVER_DIR / "tmp"
# Chunks larger than 1 MiB are spooled to FILE_UPLOAD_TEMP_DIR while the body
# is streamed in, so 50 MiB chunks never sit in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
# Only counts non-file form fields (filename, md5, ...), never file parts, so
# Django's default is already plenty; stated here to make that explicit.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# Use the package's concrete ChunkedUpload model (it is abstract by default).
DRF_CHUNKED_UPLOAD_ABSTRACT_MODEL = False

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tests.drf_server.auth.SynapseAccessTokenAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON only: the browsable API would need templates and static files.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

# With DEBUG off Django only mails errors to (no) admins; send them to stderr
# so a failing request leaves a trace in the server log.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "WARNING"}},
}
