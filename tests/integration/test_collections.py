"""Named collections, deleting and pruning, search options and Prometheus metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.core.vectorstore import image_id
from tests.conftest import RunningStack
from tests.imagegen import jpeg_bytes, near_duplicate, write_distinct_set

pytestmark = pytest.mark.e2e


def _load(stack: RunningStack, folder: Path, **extra: Any) -> dict[str, Any]:
    with stack.client() as client:
        resp = client.post("/api/v1/loads", json={"path": str(folder), **extra})
        assert resp.status_code == 202, resp.text
    job = stack.wait_job(resp.json()["job_id"])
    assert job["state"] == "succeeded", job
    return job


def _search(
    client: httpx.Client, path: Path, exact: bool = False, **form: Any
) -> list[dict[str, Any]]:
    query = path.read_bytes() if exact else jpeg_bytes(near_duplicate(Image.open(path)), 70)
    resp = client.post("/api/v1/search", files={"image": ("q.jpg", query, "image/jpeg")}, data=form)
    assert resp.status_code == 200, resp.text
    results: list[dict[str, Any]] = resp.json()["results"]
    return results


def _count(client: httpx.Client, collection: str | None = None) -> int:
    params = {"collection": collection} if collection else {}
    return int(client.get("/api/v1/stats", params=params).json()["count"])


def _rid(path: Path) -> str:
    return image_id(str(path.resolve()))


def test_two_collections_with_different_models_side_by_side(stack: RunningStack) -> None:
    vgg_files = write_distinct_set(stack.images_root / "coll_vgg", 6, start=5000)
    mob_files = write_distinct_set(stack.images_root / "coll_mob", 6, start=5100)
    with stack.client() as client:
        created = client.post(
            "/api/v1/collections",
            # GeM on a random MobileNetV2 saturates (ReLU6): every vector alike. SPoC doesn't.
            json={"name": "mobile", "model": "mobilenet_v2", "pooling": "spoc"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["dimension"] == 1280 and created.json()["count"] == 0
        again = client.post("/api/v1/collections", json={"name": "mobile", "model": "vgg16"})
        assert again.status_code == 409
        default_before = _count(client)
    _load(stack, vgg_files[0].parent)
    job = _load(stack, mob_files[0].parent, collection="mobile")
    assert job["collection"] == "mobile" and job["indexed"] == 6
    with stack.client() as client:
        assert _count(client, "mobile") == 6
        assert _count(client) == default_before + 6
        stats = client.get("/api/v1/stats", params={"collection": "mobile"}).json()
        assert (stats["model"], stats["dimension"]) == ("mobilenet_v2", 1280)
        # Randomly initialised MobileNetV2 ranks near-duplicates poorly, but the very same
        # bytes must come back first with cosine 1: proof the query used the 1280-d model.
        top = _search(client, mob_files[2], exact=True, collection="mobile")[0]
        assert top["id"] == _rid(mob_files[2]) and top["score"] > 0.9999
        assert top["image_url"].endswith("?collection=mobile")
        assert client.get(top["thumbnail_url"]).status_code == 200
        assert _search(client, vgg_files[3])[0]["id"] == _rid(vgg_files[3])
        listed = {c["name"]: c for c in client.get("/api/v1/collections").json()["collections"]}
        assert listed["mobile"]["count"] == 6 and listed["mobile"]["model"] == "mobilenet_v2"
        assert listed[stack.settings.collection]["default"] is True
        missing = client.get("/api/v1/stats", params={"collection": "nope"})
        assert missing.status_code == 404 and missing.json()["error"] == "collection_not_found"
        refused = client.delete("/api/v1/collections/mobile")
        assert refused.status_code == 400
        dropped = client.delete("/api/v1/collections/mobile", params={"confirm": "true"})
        assert dropped.status_code == 200 and dropped.json()["dropped"] == 6
        assert client.get("/api/v1/stats", params={"collection": "mobile"}).status_code == 404


def test_delete_by_id_and_by_folder_keep_counts_exact(stack: RunningStack) -> None:
    root = stack.images_root / "deleting"
    keep = write_distinct_set(root / "keep", 3, start=5200)
    drop = write_distinct_set(root / "drop" / "deeper", 4, start=5210)
    _load(stack, root)
    with stack.client() as client:
        before = _count(client)
        gone = client.delete(f"/api/v1/images/{_rid(keep[0])}")
        assert gone.status_code == 200 and gone.json()["deleted"] == 1
        assert client.get(f"/api/v1/images/{_rid(keep[0])}").status_code == 404
        assert client.delete(f"/api/v1/images/{_rid(keep[0])}").status_code == 404
        by_folder = client.delete("/api/v1/images", params={"folder": str(root / "drop")})
        assert by_folder.json()["deleted"] == 4
        assert _count(client) == before - 5
        assert all(path.exists() for path in keep + drop)  # files on disk are never touched


def test_reload_with_prune_removes_vanished_files(stack: RunningStack) -> None:
    # `_` and `%` are LIKE wildcards or literals depending on the Milvus version; the
    # sibling's name matches `prune_50%` as a pattern but is not under the folder.
    folder = stack.images_root / "prune_50%_off"
    sibling = stack.images_root / "prune-50%-off"
    files = write_distinct_set(folder, 6, start=5300)
    sibling_files = write_distinct_set(sibling, 2, start=5310)
    _load(stack, folder)
    _load(stack, sibling)
    with stack.client() as client:
        before = _count(client)
    files[0].unlink()
    files[1].unlink()
    sibling_files[0].unlink()
    job = _load(stack, folder, prune=True)
    assert (job["pruned"], job["unchanged"], job["indexed"]) == (2, 4, 0)
    with stack.client() as client:
        assert _count(client) == before - 2  # the sibling's vanished file is not pruned


def test_search_options(stack: RunningStack) -> None:
    root = stack.images_root / "options"
    files = write_distinct_set(root / "a", 5, start=5400)
    write_distinct_set(root / "b", 5, start=5410)
    for copy in ("copy1.jpg", "copy2.jpg"):
        shutil.copyfile(files[0], root / "b" / copy)
    _load(stack, root)
    with stack.client() as client:
        plain = _search(client, files[0], top_k=5)
        assert {r["id"] for r in plain[:3]} == {
            _rid(files[0]),
            _rid(root / "b" / "copy1.jpg"),
            _rid(root / "b" / "copy2.jpg"),
        }
        collapsed = _search(client, files[0], top_k=5, collapse_duplicates="true")
        assert len(collapsed) == 5
        merged = [r for r in collapsed if r["duplicates"]]
        assert len(merged) == 1 and len(merged[0]["duplicates"]) == 2
        assert len({r["id"] for r in collapsed}) == 5
        only_b = _search(client, files[0], top_k=10, folder=str(root / "b"))
        assert only_b and all(r["path"].startswith(str(root / "b") + "/") for r in only_b)
        threshold = plain[2]["score"]
        strict = _search(client, files[0], top_k=10, min_score=threshold)
        assert all(r["score"] >= threshold for r in strict) and len(strict) >= 3
        similar = client.get(
            f"/api/v1/images/{_rid(files[1])}/similar",
            params={"top_k": 3, "folder": str(root / "a")},
        ).json()["results"]
        assert len(similar) == 3
        assert all(r["path"].startswith(str(root / "a") + "/") for r in similar)


def _metrics(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _sum(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(v for (n, _), v in metrics.items() if n == name)


def test_metrics_move_by_the_expected_amounts(stack: RunningStack) -> None:
    folder = stack.images_root / "metered"
    files = write_distinct_set(folder, 7, start=5500)
    (folder / "broken.jpg").write_bytes(b"not an image")
    with stack.client() as client:
        before = _metrics(client)
        _load(stack, folder)
        for path in files[:3]:
            _search(client, path)
        after = _metrics(client)
        count = _count(client)

    def delta(name: str) -> float:
        return _sum(after, name) - _sum(before, name)

    assert delta("picsearch_worker_images_embedded_total") == 7
    assert delta("picsearch_worker_images_failed_total") == 1
    assert delta("picsearch_worker_batch_images_total") == 7
    assert delta("picsearch_job_duration_seconds_count") == 1
    search_route = ("route", "/api/v1/search")
    searches = sum(
        v
        for (n, labels), v in after.items()
        if n == "picsearch_http_requests_total" and search_route in labels
    ) - sum(
        v
        for (n, labels), v in before.items()
        if n == "picsearch_http_requests_total" and search_route in labels
    )
    assert searches == 3
    assert delta("picsearch_search_stage_seconds_count") == 9  # decode, embed, search x 3
    assert delta("picsearch_query_batch_size_sum") == 3
    vectors = after[("picsearch_vectors", (("collection", stack.settings.collection),))]
    assert vectors == count
    assert ("picsearch_queue_depth", (("queue", "picsearch"),)) in after
