"""The Milvus-demo facades, replaying each demo client's calls against the real stack.

A separate API process (real uvicorn, the stack's Redis, Milvus Lite and Celery worker) has
a default collection of its own, so the demo scripts' drops never touch other tests' data.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydantic import SecretStr

from app.core.vectorstore import image_id
from app.main import create_app
from tests.conftest import RunningStack
from tests.imagegen import distinct_image, jpeg_bytes, write_distinct_set

pytestmark = pytest.mark.e2e
BOOTCAMP = "/compat/bootcamp"
PIC_SEARCH = "/compat/pic-search"
KEY = "compat key 42"


@pytest.fixture(scope="module")
def api(stack: RunningStack) -> Iterator[str]:
    with stack.extra_api("api-compat", PICSEARCH_COLLECTION="compat") as url:
        yield url


@pytest.fixture
def client(api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def example_img(stack: RunningStack) -> Path:
    """The bootcamp scripts' folder: 20 images, one of them `test.jpg`."""
    folder = stack.images_root / "compat" / "example_img"
    write_distinct_set(folder, 19, start=1200)
    distinct_image(1219).save(folder / "test.jpg", quality=90)
    return folder.resolve()


def _job_of(client: httpx.Client, folder: Path) -> dict[str, Any]:
    jobs = client.get("/api/v1/loads", params={"limit": 500}).json()["jobs"]
    job: dict[str, Any] = next(j for j in jobs if j["path"] == str(folder))
    return job


def _wait(client: httpx.Client, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/api/v1/loads/{job_id}").json()
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish")


def _assert_pairs_ascending(pairs: list[Any]) -> list[float]:
    assert all(isinstance(p, list) and len(p) == 2 for p in pairs), pairs
    distances = [float(p[1]) for p in pairs]
    assert distances == sorted(distances) and all(0 <= d <= 4 for d in distances)
    return distances


# -- the bootcamp 2.x server: its test script, in its order ----------------------------------
def test_bootcamp_load_answers_once_loaded(client: httpx.Client, example_img: Path) -> None:
    resp = client.post(f"{BOOTCAMP}/img/load", json={"File": str(example_img)})
    assert resp.status_code == 200, resp.text
    assert resp.json() == "Successfully loaded data!"
    assert _job_of(client, example_img)["state"] == "succeeded"  # done, not just queued


def test_bootcamp_progress_count_and_data(client: httpx.Client, example_img: Path) -> None:
    progress = client.get(f"{BOOTCAMP}/progress")
    assert progress.status_code == 200 and progress.json() == "current: 20, total: 20"
    count = client.post(f"{BOOTCAMP}/img/count")
    assert count.status_code == 200 and count.json() == 20
    test_jpg = example_img / "test.jpg"
    image = client.get(f"{BOOTCAMP}/data", params={"image_path": str(test_jpg)})
    assert image.status_code == 200 and image.content == test_jpg.read_bytes()
    assert image.headers["content-type"] == "image/jpeg"


def test_bootcamp_upload_search_and_idempotence(
    client: httpx.Client, example_img: Path, stack: RunningStack
) -> None:
    test_jpg = example_img / "test.jpg"
    resp = client.post(f"{BOOTCAMP}/img/upload", files={"image": test_jpg.open("rb")})
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer.startswith("Successfully loaded data: ")
    uploaded_id = answer.removeprefix("Successfully loaded data: ")
    name = hashlib.sha256(test_jpg.read_bytes()).hexdigest() + ".jpg"
    stored = (stack.data_dir / "uploads").resolve() / name
    assert stored.read_bytes() == test_jpg.read_bytes() and uploaded_id == image_id(str(stored))
    assert client.post(f"{BOOTCAMP}/img/count").json() == 21
    again = client.post(f"{BOOTCAMP}/img/upload", files={"image": test_jpg.open("rb")})
    assert again.json() == answer  # the same bytes: same id, nothing added
    assert client.post(f"{BOOTCAMP}/img/count").json() == 21

    found = client.post(f"{BOOTCAMP}/img/search", files={"image": test_jpg.open("rb")})
    assert found.status_code == 200, found.text
    pairs = found.json()
    assert len(pairs) == 10  # topk defaults to 10
    distances = _assert_pairs_ascending(pairs)
    assert {pairs[0][0], pairs[1][0]} == {str(test_jpg), str(stored)}  # both copies, ~0
    assert distances[1] < 1e-4 < distances[2]
    three = client.post(
        f"{BOOTCAMP}/img/search", files={"image": test_jpg.open("rb")}, data={"topk": "3"}
    )
    assert len(three.json()) == 3


def test_native_upload_route_and_reload_of_the_uploads_folder(
    client: httpx.Client, stack: RunningStack
) -> None:
    data = jpeg_bytes(distinct_image(1250), 90)
    first = client.post("/api/v1/images", files={"image": ("x.jpg", data, "image/jpeg")})
    assert first.status_code == 201, first.text
    added = first.json()
    assert added["created"] is True and added["collection"] == "compat"
    path = Path(added["path"])
    assert path.parent == (stack.data_dir / "uploads").resolve() and path.suffix == ".jpg"
    assert added["id"] == image_id(str(path)) and path.read_bytes() == data
    second = client.post("/api/v1/images", files={"image": ("y.jpg", data, "image/jpeg")})
    assert second.status_code == 200 and second.json() == {**added, "created": False}
    png = client.post(
        "/api/v1/images", files={"image": ("p.png", _png(distinct_image(1251)), "image/png")}
    )
    assert png.status_code == 201 and png.json()["path"].endswith(".png")
    assert client.get(f"/api/v1/images/{added['id']}").content == data
    before = client.post(f"{BOOTCAMP}/img/count").json()

    # A folder load of the uploads folder finds the same ids: nothing embedded twice.
    uploads = path.parent
    loaded = client.post(f"{BOOTCAMP}/img/load", json={"File": str(uploads)})
    assert loaded.status_code == 200, loaded.text
    job = _job_of(client, uploads)
    assert (job["indexed"], job["unchanged"]) == (0, before - 20)
    assert client.post(f"{BOOTCAMP}/img/count").json() == before

    for files, status in (
        ({"image": ("t.jpg", b"not an image at all", "image/jpeg")}, 415),
        ({"image": ("t.jpg", data[:200], "image/jpeg")}, 422),
    ):
        resp = client.post("/api/v1/images", files=files)
        assert resp.status_code == status and set(resp.json()) == {"error", "message", "details"}
    missing = client.post(
        "/api/v1/images", files={"image": ("x.jpg", data)}, data={"collection": "no_such"}
    )
    assert missing.status_code == 404 and missing.json()["error"] == "collection_not_found"


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_bootcamp_tables_by_query_and_form(client: httpx.Client, example_img: Path) -> None:
    resp = client.post(
        f"{BOOTCAMP}/img/load", json={"Table": "compat_bc", "File": str(example_img)}
    )
    assert resp.status_code == 200 and resp.json() == "Successfully loaded data!"
    assert client.post(f"{BOOTCAMP}/img/count", params={"table_name": "compat_bc"}).json() == 20
    assert client.get(f"{BOOTCAMP}/progress", params={"table_name": "compat_bc"}).json() == (
        "current: 20, total: 20"
    )
    query = (example_img / "img_1203.jpg").read_bytes()
    by_query = client.post(
        f"{BOOTCAMP}/img/search",
        params={"table_name": "compat_bc"},
        files={"image": ("q.jpg", query)},
        data={"topk": "4"},
    ).json()
    by_form = client.post(
        f"{BOOTCAMP}/img/search",
        files={"image": ("q.jpg", query)},
        data={"topk": "4", "table_name": "compat_bc"},
    ).json()
    assert by_query == by_form and len(by_query) == 4
    assert by_query[0][0] == str(example_img / "img_1203.jpg") and by_query[0][1] < 1e-4
    dropped = client.post(f"{BOOTCAMP}/img/drop", params={"table_name": "compat_bc"})
    assert dropped.status_code == 200 and isinstance(dropped.json(), str)
    assert client.post(f"{BOOTCAMP}/img/count", params={"table_name": "compat_bc"}).status_code == (
        404
    )


def test_bootcamp_safety_rules(client: httpx.Client, example_img: Path) -> None:
    not_indexed = example_img.parent / "not_loaded.jpg"
    distinct_image(1260).save(not_indexed)  # inside the roots, but never loaded
    refused = [
        str(example_img / ".." / ".." / ".." / ".." / "etc" / "passwd"),
        "/etc/passwd",
        "/etc/hostname",
        str(not_indexed),
        "/../../etc/passwd",
        str(example_img / "no_such.jpg"),
        "example_img/test.jpg",
        str(example_img),
    ]
    bodies = set()
    for raw in refused:
        resp = client.get(f"{BOOTCAMP}/data", params={"image_path": raw})
        assert resp.status_code == 404, (raw, resp.text)
        bodies.add(resp.text)
    assert len(bodies) == 1  # one answer for all: no oracle for files outside the index
    for folder, status, code in (
        ("/etc", 403, "path_forbidden"),
        (str(example_img / ".." / ".." / ".." / ".." / "etc"), 403, "path_forbidden"),
        (str(example_img / "missing"), 404, "not_found"),
        ("relative/dir", 422, "validation_error"),
    ):
        resp = client.post(f"{BOOTCAMP}/img/load", json={"File": folder})
        assert resp.status_code == status and resp.json()["error"] == code, resp.text
    url = client.post(f"{BOOTCAMP}/img/upload", params={"url": "http://169.254.169.254/x.jpg"})
    assert url.status_code == 400 and "never fetches URLs" in url.json()["message"]
    nothing = client.post(f"{BOOTCAMP}/img/upload")
    assert nothing.status_code == 400 and nothing.json()["error"] == "bad_request"
    text = client.post(f"{BOOTCAMP}/img/search", files={"image": ("a.jpg", b"text, no image")})
    assert text.status_code == 415 and text.json()["error"] == "unsupported_media_type"


def test_bootcamp_load_of_a_cancelled_job_is_an_error_and_never_blocks(
    client: httpx.Client, stack: RunningStack, api: str
) -> None:
    folder = (stack.images_root / "compat" / "to_cancel").resolve()
    write_distinct_set(folder, 64, start=1300)
    answer: dict[str, httpx.Response] = {}

    def load() -> None:
        with httpx.Client(base_url=api, timeout=300) as other:
            answer["load"] = other.post(
                f"{BOOTCAMP}/img/load", json={"Table": "compat_cancel", "File": str(folder)}
            )

    waiter = threading.Thread(target=load)
    waiter.start()
    deadline = time.monotonic() + 120
    job: dict[str, Any] | None = None
    while job is None or job["state"] in ("queued", "scanning"):
        assert time.monotonic() < deadline
        started = time.monotonic()
        assert client.get(f"{BOOTCAMP}/progress").status_code == 200
        assert time.monotonic() - started < 5  # the waiting load does not hold the event loop
        jobs = client.get("/api/v1/loads", params={"limit": 500}).json()["jobs"]
        job = next((j for j in jobs if j["path"] == str(folder)), None)
        time.sleep(0.2)
    assert client.delete(f"/api/v1/loads/{job['job_id']}").status_code == 200
    waiter.join(60)
    resp = answer["load"]
    assert resp.status_code == 409, resp.text
    body = resp.json()
    assert body["error"] == "load_failed" and "cancelled" in body["message"]


# -- the 0.10 webserver (pic-search-webclient 0.2) -------------------------------------------
def test_pic_search_train_takes_form_json_or_query(client: httpx.Client, example_img: Path) -> None:
    calls: list[dict[str, Any]] = [
        {"data": {"Table": "compat_ps", "File": str(example_img)}},
        {"json": {"Table": "compat_ps", "File": str(example_img)}},
        {"params": {"Table": "compat_ps", "File": str(example_img)}},
    ]
    for kwargs in calls:
        resp = client.post(f"{PIC_SEARCH}/api/v1/train", **kwargs)
        assert resp.status_code == 200, resp.text
        assert resp.text == "Start" and resp.headers["content-type"].startswith("text/plain")
        job = _wait(client, _job_of(client, example_img)["job_id"])
        assert job["state"] == "succeeded" and job["collection"] == "compat_ps"
        progress = client.get(f"{PIC_SEARCH}/api/v1/process", params={"Table": "compat_ps"})
        assert progress.text == "current: 20, total: 20"
    table_args: list[dict[str, Any]] = [
        {"data": {"Table": "compat_ps"}},
        {"params": {"Table": "compat_ps"}},
    ]
    for kwargs in table_args:
        assert client.post(f"{PIC_SEARCH}/api/v1/count", **kwargs).text == "20"
    assert client.post(f"{PIC_SEARCH}/api/v1/count", json={"Table": "compat_ps"}).text == "20"
    bad = client.post(f"{PIC_SEARCH}/api/v1/train", json={"File": "/etc"})
    assert bad.status_code == 403 and bad.json()["error"] == "path_forbidden"
    missing = client.post(f"{PIC_SEARCH}/api/v1/train", data={"Table": "compat_ps"})
    assert missing.status_code == 422 and missing.json()["error"] == "validation_error"


def test_pic_search_search_results_and_image_urls(
    client: httpx.Client, example_img: Path, api: str
) -> None:
    query_path = example_img / "img_1207.jpg"
    query = query_path.read_bytes()
    resp = client.post(
        f"{PIC_SEARCH}/api/v1/search",
        files={"file": ("q.jpg", query, "image/jpeg")},
        data={"Num": "5", "Table": "compat_ps"},
    )
    assert resp.status_code == 200, resp.text
    pairs = resp.json()
    assert len(pairs) == 5
    distances = _assert_pairs_ascending(pairs)
    ident = image_id(str(query_path))
    assert pairs[0][0] == f"{api}{PIC_SEARCH}/data/{ident}.jpg?Table=compat_ps"
    assert distances[0] < 1e-4 < distances[1]
    image = client.get(pairs[0][0])
    assert image.status_code == 200 and image.content == query
    by_query = client.post(
        f"{PIC_SEARCH}/api/v1/search",
        params={"Num": "5", "Table": "compat_ps"},
        files={"file": ("q.jpg", query, "image/jpeg")},
    )
    assert by_query.json() == pairs
    one = client.post(
        f"{PIC_SEARCH}/api/v1/search",
        files={"file": ("q.jpg", query, "image/jpeg")},
        data={"Table": "compat_ps"},
    )
    assert len(one.json()) == 1  # Num defaults to 1
    for name in ("0123456789abcdef01234567.jpg", "..%2F..%2Fetc%2Fpasswd", "test.jpg"):
        assert client.get(f"{PIC_SEARCH}/data/{name}").status_code == 404


def test_pic_search_delete_drops_vectors_keeps_files(
    client: httpx.Client, example_img: Path
) -> None:
    resp = client.post(f"{PIC_SEARCH}/api/v1/delete", data={"Table": "compat_ps"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    assert "20 vectors" in resp.text
    assert client.post(f"{PIC_SEARCH}/api/v1/count", data={"Table": "compat_ps"}).status_code == (
        404
    )
    assert len(list(example_img.glob("*.jpg"))) == 20


def test_bootcamp_drop_keeps_files(
    client: httpx.Client, example_img: Path, stack: RunningStack
) -> None:
    uploads = list((stack.data_dir / "uploads").iterdir())
    resp = client.post(f"{BOOTCAMP}/img/drop")
    assert resp.status_code == 200 and resp.json() == "Successfully dropped 23 vectors"
    assert client.post(f"{BOOTCAMP}/img/count").json() == 0
    assert len(list(example_img.glob("*.jpg"))) == 20
    assert list((stack.data_dir / "uploads").iterdir()) == uploads


# -- the API key -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(stack: RunningStack) -> Iterator[TestClient]:
    settings = stack.settings.model_copy(
        update={
            "collection": "compat_key",
            "api_key": SecretStr(KEY),
            "api_key_for_reads": True,
            "api_key_query_param": True,
        }
    )
    with TestClient(create_app(settings)) as c:
        yield c


def test_api_key_guards_the_compat_routes(keyed: TestClient, example_img: Path) -> None:
    image = {"image": ("t.jpg", (example_img / "test.jpg").read_bytes(), "image/jpeg")}
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"{BOOTCAMP}/img/upload", {"files": image}),
        ("POST", f"{BOOTCAMP}/img/drop", {}),
        ("POST", f"{BOOTCAMP}/img/load", {"json": {"File": "/etc"}}),
        ("GET", f"{BOOTCAMP}/progress", {}),
        ("POST", f"{PIC_SEARCH}/api/v1/train", {"json": {"File": "/etc"}}),
        ("POST", f"{PIC_SEARCH}/api/v1/count", {}),
        ("POST", "/api/v1/images", {"files": image}),
    ]
    for method, url, kwargs in calls:
        for params in ({}, {"api_key": "wrong"}):
            resp = keyed.request(method, url, params=params, **kwargs)
            assert resp.status_code == 401 and resp.json()["error"] == "unauthorized", url
    ok = keyed.post(f"{BOOTCAMP}/img/upload", files=image, headers={"X-API-Key": KEY})
    assert ok.status_code == 200, ok.text
    assert keyed.post(f"{BOOTCAMP}/img/count", params={"api_key": KEY}).json() == 1

    found = keyed.post(
        f"{PIC_SEARCH}/api/v1/search",
        params={"api_key": KEY},
        files={"file": ("t.jpg", image["image"][1])},
    ).json()
    url = found[0][0]
    assert url.endswith(f"api_key={KEY.replace(' ', '+')}")  # img tags must carry it too
    assert keyed.get(url).content == image["image"][1]
    assert keyed.get(url.split("?")[0]).status_code == 401
    keyed.post(f"{BOOTCAMP}/img/drop", headers={"X-API-Key": KEY})


def test_query_key_is_refused_unless_enabled(stack: RunningStack) -> None:
    assert stack.settings.api_key_query_param is False  # off by default
    settings = stack.settings.model_copy(
        update={"collection": "compat_key", "api_key": SecretStr(KEY)}
    )
    with TestClient(create_app(settings)) as c:
        drop = f"{BOOTCAMP}/img/drop"
        assert c.post(drop, params={"api_key": KEY}).status_code == 401
        assert c.post(drop, headers={"X-API-Key": KEY}).status_code == 200
