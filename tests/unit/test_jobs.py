"""The Redis progress contract, against a real Redis server."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.core.jobs import ChunkCounts, FileError, JobState, JobStore, redis_client
from app.launcher import redis_server_binary
from tests.conftest import free_port


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    data = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def jobs(redis_url: str) -> JobStore:
    client = redis_client(redis_url)
    client.flushdb()
    return JobStore(client, ttl_seconds=3600, max_errors=3)


def test_chunk_counters_are_overwritten_not_added(jobs: JobStore) -> None:
    job = jobs.create("/x", "c")
    jobs.set_fields(job, discovered=10, chunks_total=2)
    jobs.set_chunk(job, "0", ChunkCounts(processed=3, indexed=3))
    jobs.set_chunk(job, "0", ChunkCounts(processed=5, indexed=4, failed=1))  # redelivered
    jobs.set_chunk(job, "1", ChunkCounts(processed=2, unchanged=2))
    progress = jobs.progress(job)
    assert progress is not None
    assert (progress.processed, progress.indexed, progress.unchanged, progress.failed) == (
        7,
        4,
        2,
        1,
    )
    assert progress.percent == 70.0


def test_terminal_states_are_final(jobs: JobStore) -> None:
    job = jobs.create("/x", "c")
    assert jobs.transition(job, JobState.scanning)
    assert jobs.transition(job, JobState.cancelled, message="cancelled: dropped")
    assert not jobs.transition(job, JobState.succeeded)
    # A chunk failing after the cancel keeps neither its state nor its reason (seen against
    # a Milvus server: the reason used to be written first, and overwrote "dropped").
    assert not jobs.transition(job, JobState.failed, message="CollectionMismatch: ...")
    assert jobs.state(job) is JobState.cancelled
    progress = jobs.progress(job)
    assert progress is not None and progress.finished_at is not None
    assert progress.message == "cancelled: dropped"
    assert not jobs.transition("unknown", JobState.failed)


def test_errors_are_capped_and_deduplicated(jobs: JobStore) -> None:
    job = jobs.create("/x", "c")
    jobs.add_errors(job, [FileError(path=f"/f{i}", reason="bad") for i in range(2)])
    jobs.add_errors(job, [FileError(path="/f0", reason="bad")])
    jobs.add_errors(job, [FileError(path=f"/g{i}", reason="bad") for i in range(5)])
    jobs.set_chunk(job, "0", ChunkCounts(processed=7, failed=7))
    progress = jobs.progress(job)
    assert progress is not None
    assert len(progress.errors) == 3 and progress.errors_truncated


def test_chunk_completion_is_counted_once(jobs: JobStore) -> None:
    job = jobs.create("/x", "c")
    jobs.set_fields(job, chunks_total=2)
    assert jobs.mark_chunk_done(job, 0) == (1, 2)
    assert jobs.mark_chunk_done(job, 0) == (1, 2)  # a redelivered chunk
    assert jobs.mark_chunk_done(job, 1) == (2, 2)


def test_recent_lists_newest_first_and_filters(jobs: JobStore) -> None:
    first = jobs.create("/a", "c")
    second = jobs.create("/b", "c")
    jobs.transition(first, JobState.failed)
    assert [p.job_id for p in jobs.recent(10)] == [second, first]
    assert [p.job_id for p in jobs.recent(10, JobState.failed)] == [first]
    assert jobs.active() == [second]


def test_rate_and_eta(jobs: JobStore, tmp_path: Path) -> None:
    job = jobs.create("/x", "c")
    jobs.set_fields(job, discovered=100)
    jobs.transition(job, JobState.embedding)
    jobs.set_fields(job, started_at=time.time() - 10)
    jobs.set_chunk(job, "0", ChunkCounts(processed=20, indexed=20))
    progress = jobs.progress(job)
    assert progress is not None and progress.images_per_second is not None
    assert 1.5 < progress.images_per_second < 2.5
    assert progress.eta_seconds is not None and 30 < progress.eta_seconds < 50
