"""A collection's int8 verdict through the API: shown in /api/v1/stats, removed on drop."""

from __future__ import annotations

from dataclasses import asdict

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ml.int8_gate import GateFigures
from app.ml.int8_store import Int8Record, Int8Store
from app.ml.registry import collection_meta
from tests.conftest import RunningStack

pytestmark = pytest.mark.e2e


def test_stats_show_the_int8_verdict_and_dropping_the_collection_removes_it(
    stack: RunningStack,
) -> None:
    settings = stack.settings.model_copy(update={"collection": "int8_api"})
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/v1/stats").json()["int8"] is None  # no load yet
        weights_id = client.app.state.services.encoder.info.weights_id  # type: ignore[attr-defined]
        meta = collection_meta(settings, weights_id)
        figures = GateFigures("minmax", 0.9, 0.91, 0.995, 0.97, False, "overlap below 0.95")
        record = Int8Record(
            state="refused",
            reason="no int8 recipe passed the gate on 64 images",
            recipe=None,
            figures=[asdict(figures)],
            images_per_s={},
            micro_batch=8,
            calibration_images=64,
            cpu="test CPU",
            seconds=1.0,
        )
        store = Int8Store(settings)
        store.write("int8_api", meta, record)  # what a worker's first load leaves

        shown = client.get("/api/v1/stats").json()
        assert shown["int8"]["state"] == "refused" and not shown["int8"]["in_use"]
        assert shown["int8"]["figures"][0]["overlap"] == 0.9
        assert shown["int8"]["reason"] == record.reason
        assert shown["runtime"] != "openvino-int8"  # queries stay on the collection's runtime

        assert client.delete("/api/v1/collection", params={"confirm": "true"}).status_code == 200
        assert not store.folder("int8_api").exists()
        assert client.get("/api/v1/stats").json()["int8"] is None
