"""The load-job contract shared by the API and the workers, stored in Redis.

A job is split into chunk tasks. Each chunk *overwrites* its own counters in one hash field,
so a chunk redelivered after a worker crash never double-counts; the job's totals are the
sum over chunks. Errors are keyed by path (idempotent too).

Keys (prefix `picsearch:`):
    job:{id}            hash   path, state, timestamps, discovered, chunks_total, message
    job:{id}:chunks     hash   chunk index -> JSON ChunkCounts ("scan" for the walk itself)
    job:{id}:done       set    finished chunk indices
    job:{id}:errors     hash   path -> reason (first `max_job_errors`)
    jobs                zset   job id by creation time
"""

from __future__ import annotations

import time
import uuid
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

TASK_SCAN = "picsearch.scan_folder"
TASK_CHUNK = "picsearch.embed_chunk"
TASK_QUEUE = "picsearch"
PREFIX = "picsearch:"
SCAN_CHUNK = "scan"


class JobState(StrEnum):
    queued = "queued"
    scanning = "scanning"
    embedding = "embedding"
    finalizing = "finalizing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})


class FileError(BaseModel):
    path: str
    reason: str


class ChunkCounts(BaseModel):
    processed: int = 0
    indexed: int = 0
    unchanged: int = 0
    failed: int = 0

    def __add__(self, other: ChunkCounts) -> ChunkCounts:
        return ChunkCounts(
            processed=self.processed + other.processed,
            indexed=self.indexed + other.indexed,
            unchanged=self.unchanged + other.unchanged,
            failed=self.failed + other.failed,
        )


class JobProgress(BaseModel):
    """Everything a progress bar needs about one load job."""

    job_id: str
    path: str
    collection: str
    state: JobState
    discovered: int = Field(description="Image files found by the folder walk.")
    processed: int = Field(description="Files handled so far: indexed + unchanged + failed.")
    indexed: int = Field(description="Files embedded and upserted by this job.")
    unchanged: int = Field(description="Files skipped because already indexed unchanged.")
    failed: int = Field(description="Files that could not be read or decoded (see errors).")
    prune: bool = Field(description="Whether vectors of vanished files are deleted.")
    pruned: int = Field(description="Vectors deleted because their file is gone (prune).")
    chunks_total: int
    chunks_done: int
    percent: float = Field(description="processed / discovered, 0-100.")
    images_per_second: float | None
    eta_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    message: str | None = None
    errors: list[FileError] = Field(description="The first per-file errors, path and reason.")
    errors_truncated: bool = Field(description="True when more files failed than are listed.")


def _ts(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), tz=UTC) if value else None


# Set the state unless the job is already terminal (or in the forbidden set); atomic.
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return -1 end
for i = 3, #ARGV do if cur == ARGV[i] then return 0 end end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'message', ARGV[2]) end
return 1
"""


class JobStore:
    def __init__(self, client: redis.Redis[str], *, ttl_seconds: int, max_errors: int) -> None:
        self.r = client
        self.ttl = ttl_seconds
        self.max_errors = max_errors
        self._transition = client.register_script(_TRANSITION)

    @staticmethod
    def key(job_id: str, suffix: str = "") -> str:
        return f"{PREFIX}job:{job_id}{suffix}"

    def _touch(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        for suffix in ("", ":chunks", ":done", ":errors"):
            pipe.expire(self.key(job_id, suffix), self.ttl)
        pipe.execute()

    def create(self, path: str, collection: str, prune: bool = False) -> str:
        job_id = uuid.uuid4().hex
        now = time.time()
        pipe = self.r.pipeline()
        pipe.hset(
            self.key(job_id),
            mapping={
                "path": path,
                "collection": collection,
                "state": JobState.queued.value,
                "created_at": now,
                "discovered": 0,
                "chunks_total": 0,
                "prune": int(prune),
                "pruned": 0,
            },
        )
        pipe.zadd(f"{PREFIX}jobs", {job_id: now})
        pipe.zremrangebyscore(f"{PREFIX}jobs", 0, now - self.ttl)
        pipe.execute()
        self._touch(job_id)
        return job_id

    def fields(self, job_id: str) -> dict[str, str]:
        raw: dict[str, str] = self.r.hgetall(self.key(job_id))
        return raw

    def state(self, job_id: str) -> JobState | None:
        value = self.r.hget(self.key(job_id), "state")
        return JobState(str(value)) if value else None

    def transition(
        self,
        job_id: str,
        new: JobState,
        *,
        unless: frozenset[JobState] = TERMINAL_STATES,
        message: str = "",
    ) -> bool:
        """Move to `new` unless the current state is in `unless`; True if it moved. The
        `message` is set in the same step, so a job's reason is never overwritten by a
        later, losing transition (e.g. a chunk failing after the job was cancelled)."""
        moved = self._transition(keys=[self.key(job_id)], args=[new.value, message, *unless])
        if moved != 1:
            return False
        # started_at (for images/s and ETA) counts from embedding, not from the folder walk.
        stamp = (
            "finished_at" if new.terminal else "started_at" if new is JobState.embedding else None
        )
        if stamp:
            self.r.hset(self.key(job_id), stamp, time.time())
        return True

    def set_fields(self, job_id: str, **values: str | int | float) -> None:
        pipe = self.r.pipeline()
        for name, value in values.items():
            pipe.hset(self.key(job_id), name, value)
        pipe.execute()

    def set_chunk(self, job_id: str, chunk: str, counts: ChunkCounts) -> None:
        self.r.hset(self.key(job_id, ":chunks"), chunk, counts.model_dump_json())

    def add_errors(self, job_id: str, errors: list[FileError]) -> None:
        if not errors:
            return
        key = self.key(job_id, ":errors")
        room = self.max_errors - int(self.r.hlen(key))
        if room > 0:
            self.r.hset(key, mapping={e.path: e.reason for e in errors[:room]})

    def mark_chunk_done(self, job_id: str, chunk: int) -> tuple[int, int]:
        """Record a finished chunk; return (chunks done, chunks total)."""
        pipe = self.r.pipeline()
        pipe.sadd(self.key(job_id, ":done"), chunk)
        pipe.scard(self.key(job_id, ":done"))
        pipe.hget(self.key(job_id), "chunks_total")
        _, done, total = pipe.execute()
        return int(done), int(total or 0)

    def exists(self, job_id: str) -> bool:
        return bool(self.r.exists(self.key(job_id)))

    def progress(self, job_id: str) -> JobProgress | None:
        pipe = self.r.pipeline()
        pipe.hgetall(self.key(job_id))
        pipe.hvals(self.key(job_id, ":chunks"))
        pipe.scard(self.key(job_id, ":done"))
        pipe.hgetall(self.key(job_id, ":errors"))
        job, chunks, done, errors = pipe.execute()
        if not job:
            return None
        counts = sum((ChunkCounts.model_validate_json(c) for c in chunks), ChunkCounts())
        return self._build(job_id, job, counts, int(done), errors)

    def _build(
        self,
        job_id: str,
        job: dict[str, str],
        counts: ChunkCounts,
        done: int,
        errors: dict[str, str],
    ) -> JobProgress:
        state = JobState(job["state"])
        discovered = int(job.get("discovered", 0))
        started = _ts(job.get("started_at"))
        finished = _ts(job.get("finished_at"))
        rate: float | None = None
        eta: float | None = None
        if started is not None:
            end = finished.timestamp() if finished else time.time()
            elapsed = max(end - started.timestamp(), 1e-3)
            if counts.processed:
                rate = counts.processed / elapsed
                if not state.terminal:
                    eta = max(discovered - counts.processed, 0) / rate
        percent = (
            100.0
            if state is JobState.succeeded
            else (100.0 * counts.processed / discovered if discovered else 0.0)
        )
        return JobProgress(
            job_id=job_id,
            path=job.get("path", ""),
            collection=job.get("collection", ""),
            state=state,
            discovered=discovered,
            processed=counts.processed,
            indexed=counts.indexed,
            unchanged=counts.unchanged,
            failed=counts.failed,
            prune=job.get("prune") == "1",
            pruned=int(job.get("pruned", 0)),
            chunks_total=int(job.get("chunks_total", 0)),
            chunks_done=done,
            percent=round(min(percent, 100.0), 2),
            images_per_second=round(rate, 2) if rate is not None else None,
            eta_seconds=round(eta, 1) if eta is not None else None,
            created_at=_ts(job["created_at"]) or datetime.now(UTC),
            started_at=started,
            finished_at=finished,
            message=job.get("message") or None,
            errors=[FileError(path=p, reason=r) for p, r in sorted(errors.items())],
            errors_truncated=counts.failed > len(errors),
        )

    def recent(self, limit: int, state: JobState | None = None) -> list[JobProgress]:
        ids = self.r.zrevrange(f"{PREFIX}jobs", 0, -1)
        out: list[JobProgress] = []
        for job_id in ids:
            progress = self.progress(str(job_id))
            if progress is None:
                self.r.zrem(f"{PREFIX}jobs", job_id)
                continue
            if state is None or progress.state is state:
                out.append(progress)
            if len(out) >= limit:
                break
        return out

    def latest(self, collection: str) -> JobProgress | None:
        """The most recent load job into `collection`, whatever its state."""
        for job_id in self.r.zrevrange(f"{PREFIX}jobs", 0, -1):
            if self.r.hget(self.key(str(job_id)), "collection") == collection:
                return self.progress(str(job_id))
        return None

    def active(self, collection: str | None = None) -> list[str]:
        """Ids of jobs not yet finished (only those loading into `collection` if given)."""
        out = []
        for job_id in self.r.zrevrange(f"{PREFIX}jobs", 0, -1):
            state, target = self.r.hmget(self.key(str(job_id)), ["state", "collection"])
            if state and not JobState(state).terminal and collection in (None, target):
                out.append(str(job_id))
        return out

    def writer_lock(self, collection: str, enabled: bool) -> AbstractContextManager[Any]:
        """Serialise writes to one collection (Milvus Lite's WAL needs a single writer)."""
        if not enabled:
            return nullcontext()
        return self.r.lock(f"{PREFIX}lock:writer:{collection}", timeout=300, blocking_timeout=600)


def redis_client(url: str, *, retries: int = 3) -> redis.Redis[str]:
    """A client that rides out short Redis outages (restarts) by retrying with backoff."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=3,
        socket_timeout=10,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
