"""The Celery application. Its settings are the ``CELERY_*`` names of config/settings.py."""

import logging
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


@signals.celeryd_init.connect
def check_stop_signal(sender: str | None = None, options: dict[str, Any] | None = None, **_: Any) -> None:
    """Say how this worker will stop on SIGTERM. A prefork worker started with REMAP_SIGTERM=SIGQUIT (the
    Procfile's and deploy/'s): the tasks in flight get CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT seconds, the rest is
    handed back. A threads worker cannot cancel a task (Celery's cold shutdown fails on it): it must stop warm,
    finishing its tasks in flight, so REMAP_SIGTERM must not be set for it."""
    chosen = (options or {}).get("pool") or (options or {}).get("pool_cls") or "prefork"
    pool = chosen.__module__.rsplit(".", 1)[-1] if isinstance(chosen, type) else str(chosen)  # prefork, thread…
    remapped = os.environ.get("REMAP_SIGTERM") == "SIGQUIT"
    log = logging.getLogger("config.celery")
    if remapped and "thread" in pool:
        log.warning(
            "worker_stop_misconfigured: REMAP_SIGTERM=SIGQUIT on a threads pool, whose tasks cannot be cancelled: "
            "unset it for this worker (it then finishes its tasks in flight on SIGTERM)"
        )
    log.info(
        "worker_stop_mode",
        extra={
            "worker": sender,
            "pool": pool,
            "on_sigterm": "soft shutdown" if remapped else "warm shutdown",
            "soft_shutdown_timeout": app.conf.worker_soft_shutdown_timeout if remapped else None,
        },
    )
