"""Per-process worker state, built in `worker_process_init` (after fork, never before)."""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass

from celery.signals import worker_process_init

from app.core.config import Settings, get_settings
from app.core.jobs import JobStore, redis_client
from app.core.logging import configure_logging
from app.core.metrics import WorkerMetrics
from app.core.vectorstore import VectorStore
from app.ml.cpu import lower_cpu_priority
from app.ml.encoder import Encoder
from app.ml.int8_runtime import Int8Encoders, usable_here
from app.ml.registry import CollectionRegistry, EncoderRegistry, meta_for
from workers.int8_calibration import Calibrator

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    settings: Settings
    encoders: EncoderRegistry
    collections: CollectionRegistry
    jobs: JobStore
    metrics: WorkerMetrics
    int8: Int8Encoders

    def for_job(self, collection: str) -> JobTools:
        """The store, encoder and settings (image size etc.) for a job's collection; the
        encoder is the collection's int8 one when it has one, and a collection with no int8
        verdict yet gets a calibrator."""
        store = self.collections.get(collection)
        base = self.encoders.for_collection(store.meta)
        encoder = self.int8.encoder(store.name, store.meta, base)
        calibrator = None
        if (
            usable_here(self.settings, base)
            # the gate measures global vectors, not region windows: those stay unquantized
            and not store.meta.regions
            and self.int8.store.read(store.name, store.meta) is None
        ):
            calibrator = Calibrator(self.int8, store.name, store.meta, base)
        return JobTools(
            store=store,
            encoder=encoder,
            settings=self.encoders.settings_for(store.meta),
            calibrator=calibrator,
        )


@dataclass(frozen=True)
class JobTools:
    store: VectorStore
    encoder: Encoder
    settings: Settings
    calibrator: Calibrator | None = None


_context: WorkerContext | None = None
# Workers wait out a Redis restart (~30 s of retries) rather than failing a chunk midway.
WORKER_REDIS_RETRIES = 20


def build_context(settings: Settings) -> WorkerContext:
    # Before any model or pipeline thread exists (they inherit it): on shared cores a search
    # then waits less for a load (query p50 during a load 115 -> 83 ms on 2 vCPUs).
    nice = lower_cpu_priority(settings.worker_nice)
    log.info("worker process runs at CPU priority nice %d", nice)
    # Only workers compile: their batches have one shape (padded), the API's vary.
    encoder = Encoder(settings, compile=settings.torch_compile)
    jobs = JobStore(
        redis_client(settings.redis_dsn, retries=WORKER_REDIS_RETRIES),
        ttl_seconds=settings.job_ttl_seconds,
        max_errors=settings.max_job_errors,
    )
    return WorkerContext(
        settings,
        EncoderRegistry(settings, encoder, compile=settings.torch_compile),
        CollectionRegistry(settings, meta_for(encoder, settings)),
        jobs,
        WorkerMetrics(jobs.r, socket.gethostname()),
        Int8Encoders(settings, "batch"),
    )


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
