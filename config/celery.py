"""The Celery application. Its settings are the ``CELERY_*`` names of config/settings.py."""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("callcentre")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def declare_every_queue(**_: Any) -> None:
    """On RabbitMQ, declare all our queues (quorum) and their exchanges when a worker starts, not only the ones
    it consumes: native delayed delivery binds every queue of the app to its delay exchanges at start, and a
    task published to a queue before any worker consumed it must find it durable already."""
    with app.connection_for_write() as connection:
        if connection.transport.driver_type != "amqp":
            return
        channel = connection.default_channel
        for queue in app.amqp.queues.values():
            queue(channel).declare()
