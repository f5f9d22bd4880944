"""The Celery application: `celery -A workers.celery_app worker` (or `picsearch worker`)."""

from __future__ import annotations

from celery import Celery

from app.core.config import Settings, get_settings
from app.core.jobs import TASK_QUEUE


def create_celery(settings: Settings) -> Celery:
    app = Celery("picsearch", broker=settings.redis_dsn, include=["workers.tasks"])
    app.conf.update(
        task_default_queue=TASK_QUEUE,
        task_ignore_result=True,
        task_acks_late=True,  # a task is acknowledged only when done: crashes redeliver it
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # long tasks: never hoard messages
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


celery_app = create_celery(get_settings())
