"""Crop search on the real stack: a collection with regions finds the photo a crop was cut from,
and its region rows follow the images (reload, change, delete, prune, drop)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image, ImageDraw
from pymilvus import MilvusClient

from app.core.vectorstore import image_id
from app.ml.regions import window_boxes
from tests.conftest import RunningStack
from tests.imagegen import distinct_image, write_distinct_set

pytestmark = pytest.mark.e2e
NAME = "crops"
SIZE = (320, 240)  # write_distinct_set's images
WINDOWS = len(window_boxes(*SIZE))


def _rid(path: Path) -> str:
    return image_id(str(path.resolve()))


def _load(stack: RunningStack, folder: Path, **extra: Any) -> dict[str, Any]:
    with stack.client() as client:
        resp = client.post("/api/v1/loads", json={"path": str(folder), "collection": NAME, **extra})
        assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["job_id"])
    assert job["state"] == "succeeded", job
    return job


def _stats(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/api/v1/stats", params={"collection": NAME})
    assert resp.status_code == 200, resp.text
    stats: dict[str, Any] = resp.json()
    return stats


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def _search(client: httpx.Client, data: bytes) -> list[dict[str, Any]]:
    resp = client.post(
        "/api/v1/search",
        files={"image": ("q.png", data, "image/png")},
        data={"collection": NAME, "top_k": "5"},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["timings"]["regions_ms"] is not None
    results: list[dict[str, Any]] = body["results"]
    return results


@pytest.fixture(scope="module")
def collection(stack: RunningStack) -> list[Path]:
    with stack.client() as client:
        created = client.post(
            "/api/v1/collections", json={"name": NAME, "model": "vgg16", "regions": True}
        )
        assert created.status_code == 201, created.text
        assert created.json()["regions"] is True
    files = write_distinct_set(stack.images_root / "regions_src", 6, start=7000)
    job = _load(stack, files[0].parent)
    assert job["indexed"] == 6
    return files


def test_counts_and_listing(stack: RunningStack, collection: list[Path]) -> None:
    with stack.client() as client:
        stats = _stats(client)
        assert stats["regions"] is True and stats["count"] == 6
        assert stats["region_count"] == 6 * WINDOWS
        listed = {c["name"]: c for c in client.get("/api/v1/collections").json()["collections"]}
        assert listed[NAME]["regions"] is True
        assert listed[stack.settings.collection]["regions"] is False
        assert NAME + "_regions" not in listed  # the region rows are not a collection of ours
        taken = client.post(
            "/api/v1/collections", json={"name": NAME + "_regions", "model": "vgg16"}
        )
        assert taken.status_code == 409


def test_crop_finds_its_source_with_the_box(stack: RunningStack, collection: list[Path]) -> None:
    source = collection[3]
    crop = (150, 70, 80, 72)
    x, y, w, h = crop
    rect = Image.open(source).crop((x, y, x + w, y + h))
    circle = rect.copy()
    mask = Image.new("L", rect.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, w - 1, h - 1), fill=255)
    white = Image.new("RGB", rect.size, (255, 255, 255))
    on_white = Image.composite(circle, white, mask)
    with stack.client() as client:
        for query in (rect, on_white, rect.resize((w * 2, h * 2))):
            top = _search(client, _png(query))[0]
            assert top["id"] == _rid(source), top
            assert top["match"]["kind"] == "region" and top["match"]["verified"] is True
            # where the query was found: the crop's own box, to a pixel or two
            found = top["match"]["box"]
            assert all(abs(a - b) <= 3 for a, b in zip(found, crop, strict=True)), found
            assert top["match"]["image_size"] == list(SIZE)
        # A whole image is still found by its global vector, first.
        whole = _search(client, source.read_bytes())[0]
        assert whole["id"] == _rid(source) and whole["match"]["kind"] == "image"


def test_an_added_upload_gets_its_regions(stack: RunningStack, collection: list[Path]) -> None:
    photo = distinct_image(7123)
    with stack.client() as client:
        before = _stats(client)["region_count"]
        added = client.post(
            "/api/v1/images",
            files={"image": ("new.png", _png(photo), "image/png")},
            data={"collection": NAME},
        )
        assert added.status_code in (200, 201), added.text
        assert _stats(client)["region_count"] == before + WINDOWS
        top = _search(client, _png(photo.crop((200, 30, 300, 130))))[0]
        assert top["id"] == added.json()["id"] and top["match"]["verified"] is True
        gone = client.delete(f"/api/v1/images/{added.json()['id']}", params={"collection": NAME})
        assert gone.status_code == 200
        assert _stats(client)["region_count"] == before


def test_reload_and_change_replace_regions(stack: RunningStack, collection: list[Path]) -> None:
    folder = collection[0].parent
    job = _load(stack, folder)
    assert job["unchanged"] == 6
    changed = collection[1]
    distinct_image(7777).save(changed, quality=90)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    job = _load(stack, folder)
    assert job["indexed"] == 1
    with stack.client() as client:
        assert _stats(client)["region_count"] == 6 * WINDOWS  # replaced, not added
        piece = Image.open(changed).crop((40, 40, 140, 120))
        top = _search(client, _png(piece))[0]
        assert top["id"] == _rid(changed) and top["match"]["verified"] is True


def test_delete_prune_and_drop_take_regions(stack: RunningStack, collection: list[Path]) -> None:
    with stack.client() as client:
        gone = client.delete(f"/api/v1/images/{_rid(collection[2])}", params={"collection": NAME})
        assert gone.status_code == 200 and gone.json()["deleted"] == 1
        assert _stats(client)["region_count"] == 5 * WINDOWS
    collection[2].unlink()  # or the load below would index it again
    collection[4].unlink()
    job = _load(stack, collection[0].parent, prune=True)
    assert job["pruned"] == 1
    with stack.client() as client:
        assert _stats(client)["count"] == 4
        assert _stats(client)["region_count"] == 4 * WINDOWS
        dropped = client.delete(f"/api/v1/collections/{NAME}", params={"confirm": "true"})
        assert dropped.status_code == 200, dropped.text
    milvus = MilvusClient(
        stack.settings.milvus_dsn, db_name=stack.settings.milvus_db_name, timeout=10
    )
    try:
        assert not milvus.has_collection(NAME + "_regions")
    finally:
        milvus.close()
