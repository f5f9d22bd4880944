"""End to end through HTTP against real Redis, Milvus Lite, a Celery worker and the API."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from app.core.vectorstore import image_id
from tests.conftest import RunningStack
from tests.imagegen import (
    bad_files,
    distinct_image,
    jpeg_bytes,
    near_duplicate,
    odd_valid_files,
    write_distinct_set,
)

pytestmark = pytest.mark.e2e


def _load(stack: RunningStack, folder: Path) -> dict[str, Any]:
    with stack.client() as client:
        resp = client.post("/api/v1/loads", json={"path": str(folder)})
    assert resp.status_code == 202, resp.text
    return stack.wait_job(resp.json()["job_id"])


def _search(client: httpx.Client, data: bytes, top_k: int = 5) -> dict[str, Any]:
    resp = client.post(
        "/api/v1/search", files={"image": ("q.jpg", data, "image/jpeg")}, data={"top_k": top_k}
    )
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


def _count(client: httpx.Client) -> int:
    return int(client.get("/api/v1/stats").json()["count"])


@pytest.fixture(scope="module")
def corpus(stack: RunningStack) -> dict[str, Any]:
    """A folder of distinct images, awkward-but-valid files and bad files, nested."""
    root = stack.images_root / "corpus"
    good = write_distinct_set(root / "a", 12, start=100)
    good += write_distinct_set(root / "b" / "deep" / "er" / "still", 6, start=200)
    for name, data in odd_valid_files(300).items():
        (root / "odd" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "odd" / name).write_bytes(data)
        good.append(root / "odd" / name)
    bad = {}
    for name, (data, reason) in bad_files(400).items():
        (root / "bad").mkdir(exist_ok=True)
        (root / "bad" / name).write_bytes(data)
        bad[str((root / "bad" / name).resolve())] = reason
    (root / "notes.txt").write_text("ignored: not an image extension")
    os.symlink("/etc/passwd", root / "escape.jpg")  # points outside the roots
    os.symlink(root, root / "b" / "loop")  # a directory loop
    bad[str(root / "escape.jpg")] = "outside the image roots"
    return {"root": root, "good": good, "bad": bad}


@pytest.fixture(scope="module")
def baseline(stack: RunningStack) -> int:
    """Vectors other test modules left in the shared collection."""
    with stack.client() as client:
        return _count(client)


@pytest.fixture(scope="module")
def first_load(stack: RunningStack, corpus: dict[str, Any], baseline: int) -> dict[str, Any]:
    return _load(stack, corpus["root"])


def test_load_reports_exact_counts_and_each_bad_file(
    first_load: dict[str, Any], corpus: dict[str, Any]
) -> None:
    job = first_load
    n_good, n_bad = len(corpus["good"]), len(corpus["bad"])
    assert job["state"] == "succeeded", job
    assert (job["discovered"], job["indexed"], job["failed"], job["unchanged"]) == (
        n_good + n_bad,
        n_good,
        n_bad,
        0,
    )
    assert job["processed"] == job["discovered"] and job["percent"] == 100.0
    reasons = {e["path"]: e["reason"] for e in job["errors"]}
    for path, expected in corpus["bad"].items():
        assert expected in reasons.get(path, ""), (path, reasons.get(path))
    assert job["finished_at"] and job["started_at"] and job["images_per_second"] > 0


def test_stats_count_matches_and_weights_are_flagged(
    stack: RunningStack, first_load: dict[str, Any], corpus: dict[str, Any], baseline: int
) -> None:
    with stack.client() as client:
        stats = client.get("/api/v1/stats").json()
    assert stats["count"] == baseline + len(corpus["good"])
    assert stats["model"] == "vgg16" and stats["dimension"] == 512
    assert stats["random_weights"] is True and stats["weights_id"].startswith("random")


def test_near_duplicate_query_finds_its_original_first(
    stack: RunningStack, first_load: dict[str, Any], corpus: dict[str, Any]
) -> None:
    with stack.client() as client:
        for path in corpus["good"][:12:3]:
            query = jpeg_bytes(near_duplicate(Image.open(path)), quality=60)
            result = _search(client, query)
            top = result["results"][0]
            assert top["id"] == image_id(str(path.resolve())), (path, result["results"][:3])
            assert top["path"] == str(path.resolve())
            assert top["image_url"] == f"/api/v1/images/{top['id']}"
            assert result["took_ms"] > 0


def test_exif_rotated_file_is_indexed_upright(
    stack: RunningStack, first_load: dict[str, Any], corpus: dict[str, Any]
) -> None:
    upright = distinct_image(306)  # odd_valid_files(300) rotates distinct_image(seed + 6)
    with stack.client() as client:
        top = _search(client, jpeg_bytes(upright, 95))["results"][0]
    assert top["path"].endswith("rotated_exif.jpg")


def test_reload_unchanged_folder_embeds_nothing(
    stack: RunningStack, first_load: dict[str, Any], corpus: dict[str, Any], baseline: int
) -> None:
    job = _load(stack, corpus["root"])
    n_good = len(corpus["good"])
    assert job["state"] == "succeeded"
    assert (job["indexed"], job["unchanged"], job["failed"]) == (0, n_good, len(corpus["bad"]))
    with stack.client() as client:
        assert _count(client) == baseline + n_good


def test_changed_file_is_reembedded_not_duplicated(
    stack: RunningStack, corpus: dict[str, Any], baseline: int
) -> None:
    folder = stack.images_root / "changing"
    paths = write_distinct_set(folder, 5, start=500)
    first = _load(stack, folder)
    assert first["indexed"] == 5
    distinct_image(999).save(paths[0], quality=90)
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    second = _load(stack, folder)
    assert (second["indexed"], second["unchanged"]) == (1, 4)
    with stack.client() as client:
        top = _search(client, jpeg_bytes(near_duplicate(distinct_image(999))))["results"][0]
        assert top["id"] == image_id(str(paths[0].resolve()))
        assert _count(client) == baseline + len(corpus["good"]) + 5


def test_image_routes_serve_by_id(
    stack: RunningStack, first_load: dict[str, Any], corpus: dict[str, Any]
) -> None:
    path = corpus["good"][0]
    ident = image_id(str(path.resolve()))
    with stack.client() as client:
        original = client.get(f"/api/v1/images/{ident}")
        assert original.status_code == 200
        assert original.content == path.read_bytes()
        assert original.headers["content-type"] == "image/jpeg"
        thumb = client.get(f"/api/v1/images/{ident}/thumbnail")
        assert thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) <= stack.settings.thumbnail_size
        similar = client.get(f"/api/v1/images/{ident}/similar", params={"top_k": 5}).json()
        ids = [r["id"] for r in similar["results"]]
        assert len(ids) == 5 and ident not in ids
        assert client.get("/api/v1/images/0123456789abcdef01234567").status_code == 404
        assert client.get("/api/v1/images/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_bad_requests_get_4xx_with_one_error_schema(stack: RunningStack) -> None:
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/api/v1/loads", {"json": {"path": "/etc"}}, 403, "path_forbidden"),
        (
            "POST",
            "/api/v1/loads",
            {"json": {"path": str(stack.images_root / "../../etc")}},
            403,
            "path_forbidden",
        ),
        (
            "POST",
            "/api/v1/loads",
            {"json": {"path": str(stack.images_root / "nope")}},
            404,
            "not_found",
        ),
        ("POST", "/api/v1/loads", {"json": {"path": "relative/dir"}}, 422, "validation_error"),
        ("POST", "/api/v1/loads", {"json": {}}, 422, "validation_error"),
        ("GET", "/api/v1/loads/doesnotexist", {}, 404, "not_found"),
        ("DELETE", "/api/v1/loads/doesnotexist", {}, 404, "not_found"),
        ("DELETE", "/api/v1/collection", {}, 400, "confirmation_required"),
        ("GET", "/api/v1/images/xyz/thumbnail", {}, 404, "not_found"),
        ("GET", "/api/v1/no-such-route", {}, 404, "not_found"),
        (
            "POST",
            "/api/v1/search",
            {"files": {"image": ("a.jpg", b"plain text, not an image", "image/jpeg")}},
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/search",
            {"files": {"image": ("a.jpg", jpeg_bytes(distinct_image(1))[:300], "image/jpeg")}},
            422,
            "invalid_image",
        ),
        (
            "POST",
            "/api/v1/search",
            {"files": {"image": ("a.jpg", jpeg_bytes(distinct_image(1)))}, "data": {"top_k": 0}},
            422,
            "validation_error",
        ),
        ("POST", "/api/v1/search", {}, 422, "validation_error"),
    ]
    with stack.client() as client:
        for method, url, kwargs, status, code in cases:
            resp = client.request(method, url, **kwargs)
            assert resp.status_code == status, (method, url, resp.text)
            body = resp.json()
            assert body["error"] == code and body["message"], (url, body)
            assert set(body) == {"error", "message", "details"}


def test_upload_over_the_limit_is_413(stack: RunningStack) -> None:
    big = b"\xff\xd8" + b"\0" * (stack.settings.max_upload_bytes + 100_000)
    with stack.client() as client:
        resp = client.post("/api/v1/search", files={"image": ("big.jpg", big, "image/jpeg")})
    assert resp.status_code == 413 and resp.json()["error"] == "payload_too_large"


def test_images_are_searchable_while_the_load_runs(stack: RunningStack) -> None:
    folder = stack.images_root / "streaming"
    write_distinct_set(folder, 48, start=600)
    seen_partial = False
    with stack.client() as client:
        before = _count(client)
        job_id = client.post("/api/v1/loads", json={"path": str(folder)}).json()["job_id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/loads/{job_id}").json()
            if job["state"] == "succeeded":
                break
            if job["state"] == "embedding" and _count(client) > before:
                seen_partial = True
                assert job["processed"] < job["discovered"]
            time.sleep(0.2)
        assert job["state"] == "succeeded" and job["indexed"] == 48
        assert _count(client) == before + 48
    assert seen_partial, "no vector was searchable before the job finished"


def test_cancel_stops_the_job_and_keeps_what_was_indexed(stack: RunningStack) -> None:
    folder = stack.images_root / "cancelme"
    write_distinct_set(folder, 64, start=700)
    with stack.client() as client:
        before = _count(client)
        job_id = client.post("/api/v1/loads", json={"path": str(folder)}).json()["job_id"]
        deadline = time.monotonic() + 120
        while client.get(f"/api/v1/loads/{job_id}").json()["indexed"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cancelled = client.delete(f"/api/v1/loads/{job_id}")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        time.sleep(6)  # any chunk in flight stops after its current batch
        job = client.get(f"/api/v1/loads/{job_id}").json()
        assert job["state"] == "cancelled"
        assert job["indexed"] < 64
        assert _count(client) == before + job["indexed"]
        again = client.delete(f"/api/v1/loads/{job_id}")
        assert again.status_code == 409 and again.json()["error"] == "conflict"
        listed = client.get("/api/v1/loads", params={"state": "cancelled"}).json()["jobs"]
        assert job_id in [j["job_id"] for j in listed]


def test_a_finished_load_and_a_delete_show_in_searches_at_once(stack: RunningStack) -> None:
    """`succeeded` means searchable from the API's own client, and a deleted image is gone
    when its DELETE returns. Against a Milvus server (PICSEARCH_TEST_MILVUS_URI) both lagged
    ~0.3 s until the job's end and the delete waited for the query nodes."""
    folder = stack.images_root / "visible_at_once"
    newest = write_distinct_set(folder, 8, start=800)[-1]  # in the last batch written
    newest_id = image_id(str(newest.resolve()))
    with stack.client() as client:
        job_id = client.post("/api/v1/loads", json={"path": str(folder)}).json()["job_id"]
        # Polled fast: the lag to catch was ~0.3 s right after `succeeded`.
        assert stack.wait_job(job_id, timeout=120, poll=0.02)["state"] == "succeeded"
        assert _search(client, newest.read_bytes(), top_k=3)["results"][0]["id"] == newest_id
        assert client.delete(f"/api/v1/images/{newest_id}").status_code == 200
        hits = _search(client, newest.read_bytes(), top_k=3)["results"]
        assert newest_id not in [hit["id"] for hit in hits]


def _nice(pid: int, thread: int | None = None) -> int:
    stat = Path(f"/proc/{pid}/task/{thread or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
def test_a_load_runs_below_the_apis_cpu_priority(stack: RunningStack) -> None:
    """Every thread of a worker process (model, decoding, upserts) runs at
    PICSEARCH_WORKER_NICE, so searches on shared cores go first; the API keeps its own."""
    folder = stack.images_root / "priority"
    write_distinct_set(folder, 4, start=900)
    assert _load(stack, folder)["state"] == "succeeded"
    expected = max(os.nice(0), stack.settings.worker_nice)
    assert expected > os.nice(0)  # the default lowers it
    processes = _children(stack.stack.procs["worker"].popen.pid)
    assert processes, "no worker process found"
    for pid in processes:
        threads = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()]
        assert len(threads) > 1  # the model's and the pipeline's threads are there too
        assert {t: _nice(pid, t) for t in threads} == dict.fromkeys(threads, expected)
    assert _nice(stack.stack.procs["api"].popen.pid) == os.nice(0)
