"""Settings for the test suite: the same as production settings, on a dedicated Redis database.

Tests flush that Redis database, so it must never be the one a running system uses
(``TEST_REDIS_URL``, default db 15 of the local Redis). The Celery broker is that database too, unless
``TEST_BROKER_URL`` names another (RabbitMQ).
"""

import os

os.environ["REDIS_URL"] = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# The broker is the test Redis database, or TEST_BROKER_URL (e.g. amqp://guest:guest@127.0.0.1:5672// to run the
# workflow suites on RabbitMQ: `make test-rabbitmq`).
if os.environ.get("TEST_BROKER_URL"):
    os.environ["CELERY_BROKER_URL"] = os.environ["TEST_BROKER_URL"]
else:
    os.environ.pop("CELERY_BROKER_URL", None)
for _name in (
    "AUTH_SEED_ADMIN_EMAIL",
    "AUTH_SEED_ADMIN_PASSWORD",
    "PUSHER_APP_ID",
    "PUSHER_KEY",
    "PUSHER_SECRET",
    "WEBHOOK_ALLOWED_ORIGINS",
    "RECORDING_ALLOWED_ORIGINS",
    "CRM_API_KEY",
    "ELEVENLABS_API_KEY",
    "ELEVENLABS_BASE_URL",
    "LLM_API_KEY",
    "LLM_BASE_URL",
):
    os.environ.pop(_name, None)  # tests set what they need; nothing leaks from the shell or `make`
os.environ.pop("CELERY_RESULT_BACKEND", None)
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("REALTIME_STRICT_EVENTS", "true")

from config.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed; not a security test
