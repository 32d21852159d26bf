"""The Celery application.

Reliability settings (see DESIGN.md, "Celery conventions"):
- acks late + reject on worker lost: a task whose worker dies is re-delivered, not lost;
- prefetch 1: a worker never sits on messages another worker could run;
- JSON only;
- the hard time limit stays below the Redis visibility timeout, so a message is never
  re-delivered while its task may still legitimately be running.
"""

import os

from celery import Celery
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("callcentre")
app.config_from_object("django.conf:settings", namespace="CELERY")

QUEUE_NAMES = ("default", "crm", "webhooks")


def _configure(app: Celery) -> None:
    from django.conf import settings

    visibility_timeout = settings.CELERY_VISIBILITY_TIMEOUT
    app.conf.update(
        broker_url=settings.CELERY_BROKER_URL,
        result_backend=settings.CELERY_RESULT_BACKEND,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": visibility_timeout},
        result_backend_transport_options={"visibility_timeout": visibility_timeout},
        result_expires=24 * 3600,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_time_limit=settings.CELERY_TASK_TIME_LIMIT,
        task_soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT,
        task_track_started=True,
        task_default_queue="default",
        task_queues=tuple(Queue(name, Exchange(name), routing_key=name) for name in QUEUE_NAMES),
        task_routes={
            # Tasks that call the CRM run on the "crm" queue, outgoing webhooks on "webhooks".
            "fiches.tasks.crm.*": {"queue": "crm"},
            "realtime.tasks.webhooks.*": {"queue": "webhooks"},
        },
        beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
        timezone=settings.TIME_ZONE,
        enable_utc=True,
        worker_hijack_root_logger=False,
    )
    if not app.conf.task_time_limit < visibility_timeout:
        raise ValueError(
            "CELERY_TASK_TIME_LIMIT must be below CELERY_VISIBILITY_TIMEOUT "
            f"({app.conf.task_time_limit} >= {visibility_timeout})"
        )


app.on_configure.connect(lambda sender, **_: _configure(sender), weak=False)
app.autodiscover_tasks()
