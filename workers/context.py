"""Per-process worker state, built in `worker_process_init` (after fork, never before)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from celery.signals import worker_process_init

from app.core.config import Settings, get_settings
from app.core.jobs import JobStore, redis_client
from app.core.logging import configure_logging
from app.core.vectorstore import CollectionMeta, VectorStore
from app.ml.encoder import Encoder

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    encoder: Encoder
    store: VectorStore
    jobs: JobStore


_context: WorkerContext | None = None
# Workers wait out a Redis restart (~30 s of retries) rather than failing a chunk midway.
WORKER_REDIS_RETRIES = 20


def build_context(settings: Settings) -> WorkerContext:
    encoder = Encoder(settings)
    meta = CollectionMeta(
        model=encoder.info.model,
        weights_id=encoder.info.weights_id,
        dim=encoder.info.dim,
        recipe=encoder.info.recipe,
    )
    jobs = JobStore(
        redis_client(settings.redis_dsn, retries=WORKER_REDIS_RETRIES),
        ttl_seconds=settings.job_ttl_seconds,
        max_errors=settings.max_job_errors,
    )
    return WorkerContext(settings, encoder, VectorStore(settings, meta), jobs)


def get_context() -> WorkerContext:
    global _context
    if _context is None:  # solo pool or a process that missed the signal
        _context = build_context(get_settings())
    return _context


@worker_process_init.connect
def _init_worker_process(**_: object) -> None:
    global _context
    settings = get_settings()
    configure_logging(settings)
    _context = build_context(settings)
