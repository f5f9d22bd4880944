"""The API in-process (TestClient, lifespan run) against the real Redis and Milvus servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.ml.batcher import MicroBatcher
from tests.conftest import RunningStack
from tests.imagegen import distinct_image, jpeg_bytes

pytestmark = pytest.mark.e2e
KEY = "correct horse battery staple"


def _settings(stack: RunningStack, **overrides: object) -> Settings:
    return stack.settings.model_copy(update={"collection": "api_tests", **overrides})


@pytest.fixture(scope="module")
def secured(stack: RunningStack) -> Iterator[TestClient]:
    from pydantic import SecretStr

    settings = _settings(stack, api_key=SecretStr(KEY), cors_origins=["http://allowed.example"])
    with TestClient(create_app(settings)) as client:
        yield client


def test_mutating_routes_need_the_api_key(secured: TestClient, stack: RunningStack) -> None:
    outside = {"path": "/etc"}
    for headers in ({}, {"X-API-Key": "wrong"}):
        resp = secured.post("/api/v1/loads", json=outside, headers=headers)
        assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
        assert secured.delete("/api/v1/collection", headers=headers).status_code == 401
        assert secured.delete("/api/v1/loads/abc", headers=headers).status_code == 401
    ok = {"X-API-Key": KEY}
    assert secured.post("/api/v1/loads", json=outside, headers=ok).status_code == 403
    assert secured.delete("/api/v1/collection", headers=ok).status_code == 400
    assert secured.get("/api/v1/stats").status_code == 200  # reads stay open


def test_reads_can_require_the_key_too(stack: RunningStack) -> None:
    from pydantic import SecretStr

    settings = _settings(stack, api_key=SecretStr(KEY), api_key_for_reads=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/stats").status_code == 401
        assert client.get("/api/v1/stats", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200  # probes stay open
        assert client.get("/readyz").status_code == 200


def test_cors_is_closed_except_for_configured_origins(secured: TestClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        resp = secured.options(
            "/api/v1/stats",
            headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
        )
        return dict(resp.headers)

    assert preflight("http://allowed.example").get("access-control-allow-origin") == (
        "http://allowed.example"
    )
    assert "access-control-allow-origin" not in preflight("http://evil.example")


def test_openapi_documents_the_error_schema(secured: TestClient) -> None:
    spec = secured.get("/openapi.json").json()
    assert "ErrorResponse" in spec["components"]["schemas"]
    search = spec["paths"]["/api/v1/search"]["post"]
    assert search["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    assert "loads-start_load" in {
        op["operationId"] for path in spec["paths"].values() for op in path.values()
    }


def test_other_model_on_the_same_collection_is_refused(
    secured: TestClient, stack: RunningStack
) -> None:
    secured.get("/api/v1/stats")  # the vgg16 app created "api_tests"
    settings = _settings(stack, model="mobilenet_v2")
    with TestClient(create_app(settings)) as other:
        resp = other.get("/api/v1/stats")
        assert resp.status_code == 409
        body = resp.json()
        assert body["error"] == "collection_mismatch"
        assert "PICSEARCH_COLLECTION" in body["message"] and "vgg16" in body["message"]
        ready = other.get("/readyz")
        assert ready.status_code == 503 and "mobilenet_v2" in ready.json()["details"]["milvus"]
        query = {"image": ("q.jpg", jpeg_bytes(distinct_image(1)), "image/jpeg")}
        assert other.post("/api/v1/search", files=query).status_code == 409


def test_concurrent_searches_share_forward_passes(stack: RunningStack) -> None:
    with TestClient(create_app(_settings(stack))) as client:
        queries = [jpeg_bytes(distinct_image(s)) for s in range(12)]

        def search(data: bytes) -> list[str]:
            resp = client.post("/api/v1/search", files={"image": ("q.jpg", data, "image/jpeg")})
            assert resp.status_code == 200, resp.text
            return [r["id"] for r in resp.json()["results"]]

        sequential = [search(q) for q in queries]
        with ThreadPoolExecutor(12) as pool:
            concurrent = list(pool.map(search, queries))
        assert concurrent == sequential


def test_micro_batcher_groups_waiting_requests() -> None:
    sizes: list[int] = []
    gate = threading.Event()

    def embed(batch: np.ndarray) -> np.ndarray:
        gate.wait(5)
        sizes.append(len(batch))
        return batch.reshape(len(batch), -1).astype(np.float32)

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(embed, ThreadPoolExecutor(1), max_batch=4)
        batcher.start()
        tasks = [asyncio.create_task(batcher.embed_one(np.full((2, 2, 1), 0)))]
        await asyncio.sleep(0.1)  # the first query is now inside the model
        tasks += [
            asyncio.create_task(batcher.embed_one(np.full((2, 2, 1), i))) for i in range(1, 6)
        ]
        await asyncio.sleep(0.1)
        gate.set()
        out = await asyncio.gather(*tasks)
        await batcher.stop()
        return out

    results = asyncio.run(scenario())
    assert [int(r[0]) for r in results] == list(range(6))  # each caller gets its own vector
    assert sizes == [1, 4, 1]  # the first runs alone; the rest queue and share passes
