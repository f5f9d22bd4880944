"""Thin Celery tasks: arguments, retries and progress. The work is in `workers.pipeline`.

Every task is idempotent: a message redelivered after a worker crash repeats no effect
(chunk counters are overwritten, vectors are upserted by stable id, the scan dispatches
only once it has not finished dispatching before).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import redis
from celery import Task

from app.core.errors import CollectionMismatch, PicsearchError, ServiceUnavailable
from app.core.jobs import (
    SCAN_CHUNK,
    TASK_CHUNK,
    TASK_SCAN,
    ChunkCounts,
    FileError,
    JobState,
    JobStore,
)
from app.core.paths import resolve_in_roots
from workers.celery_app import celery_app
from workers.context import JobTools, WorkerContext, get_context
from workers.pipeline import ChunkRunner, scan_folder, share_chunks

log = logging.getLogger(__name__)

RETRYABLE = (ServiceUnavailable, redis.ConnectionError, redis.TimeoutError)


class JobTask(Task):  # type: ignore[type-arg]
    """Marks the job failed once retries are exhausted, with a readable message."""

    autoretry_for = RETRYABLE
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 8

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        job_id = str(args[0]) if args else ""
        if job_id:
            fail_job(get_context().jobs, job_id, f"{type(exc).__name__}: {exc}")


def fail_job(jobs: JobStore, job_id: str, message: str) -> None:
    if jobs.transition(job_id, JobState.failed, message=message):
        log.error("job failed: %s", message, extra={"job_id": job_id})
    else:
        log.warning("job already ended; not failed by: %s", message, extra={"job_id": job_id})


class RedisSink:
    """A chunk's window onto its job: progress, cancellation, the collection write lock."""

    def __init__(self, ctx: WorkerContext, job_id: str, chunk: int, collection: str) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.chunk = str(chunk)
        self.collection = collection

    def update(self, counts: ChunkCounts, errors: list[FileError]) -> None:
        self.ctx.jobs.set_chunk(self.job_id, self.chunk, counts)
        self.ctx.jobs.add_errors(self.job_id, errors)

    def cancelled(self) -> bool:
        state = self.ctx.jobs.state(self.job_id)
        return state is None or state.terminal

    def write_lock(self) -> AbstractContextManager[object]:
        return self.ctx.jobs.writer_lock(self.collection, self.ctx.settings.single_writer)


def finalize(ctx: WorkerContext, job_id: str, tools: JobTools) -> None:
    """Finish the load (a flush on Milvus Lite), then mark succeeded: the bar reaches 100 %
    only once every vector is searchable, from any client, at full speed."""
    ctx.jobs.transition(job_id, JobState.finalizing)
    with ctx.jobs.writer_lock(tools.store.name, ctx.settings.single_writer):
        tools.store.finish_load()
    if ctx.jobs.transition(job_id, JobState.succeeded):
        progress = ctx.jobs.progress(job_id)
        if progress is not None and progress.finished_at is not None:
            seconds = (progress.finished_at - progress.created_at).total_seconds()
            ctx.metrics.observe_job(seconds)
            log.info(
                "job succeeded in %.1fs: %d indexed, %d unchanged, %d failed",
                seconds,
                progress.indexed,
                progress.unchanged,
                progress.failed,
                extra={"job_id": job_id},
            )


def prune_vanished(ctx: WorkerContext, tools: JobTools, folder: Path, present: list[str]) -> int:
    """Delete vectors of files under `folder` that the scan no longer found."""
    keep = set(present)
    stored = tools.store.rows_under(str(folder))
    gone = [i for i, path in stored.items() if path not in keep and not Path(path).exists()]
    with ctx.jobs.writer_lock(tools.store.name, ctx.settings.single_writer):
        return tools.store.delete(gone)


@celery_app.task(name=TASK_SCAN, base=JobTask)
def scan_folder_task(job_id: str) -> None:
    ctx = get_context()
    jobs = ctx.jobs
    fields = jobs.fields(job_id)
    if not fields or JobState(fields["state"]).terminal or fields.get("dispatched"):
        return
    jobs.transition(job_id, JobState.scanning)
    try:
        folder = resolve_in_roots(fields["path"], ctx.settings.readable_roots, want_dir=True)
        tools = ctx.for_job(fields["collection"])
        tools.store.ensure_collection()
    except ServiceUnavailable:
        raise
    except PicsearchError as exc:
        fail_job(jobs, job_id, exc.message)
        return
    scan = scan_folder(
        Path(folder),
        ctx.settings.readable_roots,
        on_progress=lambda found: jobs.set_fields(job_id, discovered=found),
    )
    chunks = share_chunks(
        scan.files,
        ctx.settings.chunk_size_for(tools.encoder.device.type),
        ctx.settings.worker_concurrency,
    )
    jobs.set_chunk(
        job_id, SCAN_CHUNK, ChunkCounts(processed=len(scan.errors), failed=len(scan.errors))
    )
    jobs.add_errors(job_id, scan.errors)
    jobs.set_fields(job_id, discovered=len(scan.files) + len(scan.errors), chunks_total=len(chunks))
    if fields.get("prune") == "1":
        jobs.set_fields(job_id, pruned=prune_vanished(ctx, tools, Path(folder), scan.files))
    log.info(
        "scanned %s: %d files in %d chunks",
        folder,
        len(scan.files),
        len(chunks),
        extra={"job_id": job_id},
    )
    if not jobs.transition(job_id, JobState.embedding):
        return  # cancelled while scanning
    for index, files in enumerate(chunks):
        celery_app.send_task(TASK_CHUNK, args=[job_id, index, files], task_id=f"{job_id}-{index}")
    jobs.set_fields(job_id, dispatched=1)
    if not chunks:
        finalize(ctx, job_id, tools)


@celery_app.task(name=TASK_CHUNK, base=JobTask)
def embed_chunk_task(job_id: str, index: int, files: list[str]) -> None:
    ctx = get_context()
    fields = ctx.jobs.fields(job_id)
    if not fields:
        return  # expired or unknown job
    try:
        tools = ctx.for_job(fields["collection"])
    except ServiceUnavailable:
        raise
    except PicsearchError as exc:  # e.g. the collection was dropped meanwhile
        fail_job(ctx.jobs, job_id, exc.message)
        return
    if not JobState(fields["state"]).terminal:
        runner = ChunkRunner(
            tools.settings, tools.encoder, tools.store, job_id, calibrator=tools.calibrator
        )
        try:
            counts = runner.run(files, RedisSink(ctx, job_id, index, tools.store.name))
        except CollectionMismatch as exc:
            fail_job(ctx.jobs, job_id, exc.message)
            return
        embedded = sum(runner.batch_sizes)
        ctx.metrics.add(
            images_embedded=embedded,
            images_failed=counts.failed,
            batches=len(runner.batch_sizes),
            batch_images=embedded,
            decode_wait_seconds=runner.timings["decode_wait"],
            embed_seconds=runner.timings["embed"],
            write_seconds=runner.timings["write"],
        )
        log.info("chunk %d: %s", index, counts.model_dump(), extra={"job_id": job_id})
    done, total = ctx.jobs.mark_chunk_done(job_id, index)
    if done >= total:
        finalize(ctx, job_id, tools)
