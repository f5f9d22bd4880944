"""Faults against real processes: killed workers, restarted Redis and Milvus, races.

Each test checks the outcome that matters: exact vector counts (0 lost, 0 duplicated) and a
progress record that tells the truth.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.launcher import Stack
from tests.conftest import RunningStack, settings_from_env, stack_env
from tests.imagegen import write_distinct_set

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A stack of its own, since these tests kill and restart its processes."""
    base = tmp_path_factory.mktemp("faults")
    env = stack_env(base, PICSEARCH_COLLECTION="faults")
    settings = settings_from_env(env)
    (base / "roots").mkdir()
    running = Stack(settings, env=env)
    running.start()
    try:
        yield RunningStack(running, env, settings, base / "roots", settings.data_dir)
    finally:
        running.stop()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _count(client: httpx.Client) -> int:
    return int(client.get("/api/v1/stats").json()["count"])


def _start(client: httpx.Client, folder: Path) -> str:
    resp = client.post("/api/v1/loads", json={"path": str(folder)})
    assert resp.status_code == 202, resp.text
    return str(resp.json()["job_id"])


def _job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    job: dict[str, Any] = client.get(f"/api/v1/loads/{job_id}").json()
    return job


def _assert_exact(job: dict[str, Any], n: int) -> None:
    assert job["state"] == "succeeded", job
    assert (job["discovered"], job["processed"], job["indexed"], job["failed"]) == (n, n, n, 0), job


def test_sigkilled_worker_loses_and_duplicates_nothing(fault_stack: RunningStack) -> None:
    folder = fault_stack.images_root / "kill"
    write_distinct_set(folder, 40, start=1000)
    with fault_stack.client() as client:
        before = _count(client)
        job_id = _start(client, folder)
        _wait(lambda: _job(client, job_id)["indexed"] >= 10, 120, "the load to get going")
        fault_stack.stack.procs["worker"].kill()  # SIGKILL to the whole worker process group
        killed_at = _job(client, job_id)
        assert killed_at["state"] == "embedding" and killed_at["indexed"] < 40
        fault_stack.restart_worker()
        job = fault_stack.wait_job(job_id, timeout=240)
        _assert_exact(job, 40)
        assert _count(client) == before + 40


def test_redis_restart_mid_load_is_ridden_out(fault_stack: RunningStack) -> None:
    folder = fault_stack.images_root / "redis"
    write_distinct_set(folder, 32, start=1100)
    stack = fault_stack.stack
    with fault_stack.client() as client:
        before = _count(client)
        job_id = _start(client, folder)
        _wait(lambda: _job(client, job_id)["indexed"] >= 8, 120, "the load to get going")
        stack.procs["redis"].stop()  # SIGTERM: Redis writes its AOF and exits
        not_ready = client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.json()["details"]["redis"].startswith("error")
        time.sleep(2)
        stack.start_redis()
        _wait(lambda: client.get("/readyz").status_code == 200, 60, "readiness after Redis")
        job = fault_stack.wait_job(job_id, timeout=240)
        _assert_exact(job, 32)
        assert _count(client) == before + 32


needs_embedded_milvus = pytest.mark.skipif(
    bool(os.environ.get("PICSEARCH_TEST_MILVUS_URI")),
    reason="restarts the embedded Milvus Lite; an external Milvus is not ours to restart",
)


@needs_embedded_milvus
def test_milvus_restart_between_load_and_search_keeps_every_vector(
    fault_stack: RunningStack,
) -> None:
    folder = fault_stack.images_root / "milvus"
    write_distinct_set(folder, 16, start=1200)
    stack = fault_stack.stack
    with fault_stack.client() as client:
        before = _count(client)
        _assert_exact(fault_stack.wait_job(_start(client, folder)), 16)
        stack.procs["milvus"].stop()
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json()["details"]["milvus"].startswith("error")
        assert client.get("/api/v1/stats").status_code == 503
        stack.start_milvus()
        _wait(lambda: client.get("/readyz").status_code == 200, 60, "readiness after Milvus")
        assert _count(client) == before + 16


@needs_embedded_milvus
def test_milvus_restart_mid_load_retries_the_chunk(fault_stack: RunningStack) -> None:
    folder = fault_stack.images_root / "milvus_mid"
    write_distinct_set(folder, 32, start=1300)
    stack = fault_stack.stack
    with fault_stack.client() as client:
        before = _count(client)
        job_id = _start(client, folder)
        _wait(lambda: _job(client, job_id)["indexed"] >= 8, 120, "the load to get going")
        stack.procs["milvus"].stop()
        time.sleep(3)
        stack.start_milvus()
        job = fault_stack.wait_job(job_id, timeout=300)
        _assert_exact(job, 32)
        assert _count(client) == before + 32


def test_two_loads_of_one_folder_at_once_do_not_duplicate(fault_stack: RunningStack) -> None:
    folder = fault_stack.images_root / "twice"
    write_distinct_set(folder, 24, start=1400)
    with fault_stack.client() as client:
        before = _count(client)
        first, second = _start(client, folder), _start(client, folder)
        jobs = [fault_stack.wait_job(first), fault_stack.wait_job(second)]
        for job in jobs:
            assert job["state"] == "succeeded"
            assert job["indexed"] + job["unchanged"] == 24 and job["failed"] == 0
        assert sum(j["indexed"] for j in jobs) >= 24
        assert _count(client) == before + 24


def test_drop_during_a_load_cancels_it_cleanly(fault_stack: RunningStack) -> None:
    folder = fault_stack.images_root / "dropped"
    write_distinct_set(folder, 48, start=1500)
    with fault_stack.client() as client:
        job_id = _start(client, folder)
        _wait(lambda: _job(client, job_id)["indexed"] >= 8, 120, "the load to get going")
        dropped = client.delete("/api/v1/collection", params={"confirm": "true"})
        assert dropped.status_code == 200, dropped.text
        assert job_id in dropped.json()["cancelled_jobs"]
        job = fault_stack.wait_job(job_id)
        assert job["state"] == "cancelled" and "dropped" in job["message"]
        time.sleep(4)  # a chunk in flight must not write into the new collection
        assert _count(client) == 0
        _assert_exact(fault_stack.wait_job(_start(client, folder)), 48)
        assert _count(client) == 48
