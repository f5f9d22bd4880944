"""A bounded load test on loopback: 50 concurrent search clients while a load job runs.

It asserts correctness under load (no errors, the job still succeeds); the throughput and
latency it measures are reported in test-artifacts/load-test.json, not asserted.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
import pytest

from tests.conftest import ARTIFACTS, RunningStack
from tests.imagegen import distinct_image, jpeg_bytes, write_distinct_set

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLIENTS = 50
DURATION_S = 20.0
MAX_REQUESTS_PER_CLIENT = 40


async def _client_loop(
    client: httpx.AsyncClient,
    query: bytes,
    stop_at: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() >= stop_at:
            return
        start = time.perf_counter()
        resp = await client.post(
            "/api/v1/search", files={"image": ("q.jpg", query, "image/jpeg")}, data={"top_k": 10}
        )
        latencies.append(time.perf_counter() - start)
        if resp.status_code != 200 or not resp.json()["results"]:
            errors.append(f"{resp.status_code}: {resp.text[:200]}")


async def _hammer(base_url: str, queries: list[bytes]) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        start = time.monotonic()
        stop_at = start + DURATION_S
        await asyncio.gather(
            *(
                _client_loop(client, queries[i % len(queries)], stop_at, latencies, errors)
                for i in range(CLIENTS)
            )
        )
        elapsed = time.monotonic() - start
    return latencies, errors, elapsed


def test_fifty_concurrent_searchers_during_a_load(stack: RunningStack) -> None:
    seed_folder = stack.images_root / "load-seed"
    write_distinct_set(seed_folder, 8, start=3000)
    busy_folder = stack.images_root / "load-busy"
    write_distinct_set(busy_folder, 40, start=3100)
    with stack.client() as client:
        seed = client.post("/api/v1/loads", json={"path": str(seed_folder)}).json()["job_id"]
        assert stack.wait_job(seed)["state"] == "succeeded"
        busy = client.post("/api/v1/loads", json={"path": str(busy_folder)}).json()["job_id"]
    queries = [jpeg_bytes(distinct_image(s)) for s in range(3000, 3008)]
    latencies, errors, elapsed = asyncio.run(_hammer(stack.api_url, queries))
    job = stack.wait_job(busy)
    assert not errors, errors[:5]
    assert job["state"] == "succeeded" and job["indexed"] == 40
    latencies.sort()
    report = {
        "clients": CLIENTS,
        "requests": len(latencies),
        "seconds": round(elapsed, 1),
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
        "errors": len(errors),
        "concurrent_load_images_per_second": job["images_per_second"],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load-test.json").write_text(json.dumps(report, indent=2))
    print(f"\nload test: {report}")
