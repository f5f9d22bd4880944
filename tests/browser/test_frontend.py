"""Browser tests of the web UI (frontend/) against the real running stack.

Chromium (Debian's /usr/bin/chromium) drives the page served by the API at `/`; nothing is
mocked except where a test says so (a simulated outage, a 401, the final DELETE of the
"clear collection" flow, so the shared collection survives, and a stats answer claiming a
small upload limit and a required API key). The named collection "mobile" the tests create is
dropped again before the module ends (other modules create one of that name). Screenshots of
each state go to `$PICSEARCH_TEST_ARTIFACTS/screenshots` (default `test-artifacts/screenshots`).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "browser tests need Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )
pytest.importorskip(
    "playwright.sync_api",
    reason="browser tests need the playwright package (pip install playwright; "
    "`playwright install` is not needed, /usr/bin/chromium is used)",
)

from playwright.sync_api import Browser, FilePayload, Page, expect, sync_playwright  # noqa: E402

from app.core.vectorstore import image_id  # noqa: E402
from tests.imagegen import distinct_image, jpeg_bytes, near_duplicate, write_distinct_set  # noqa: E402

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
SHOTS = (
    Path(os.environ.get("PICSEARCH_TEST_ARTIFACTS", REPO / "test-artifacts")).resolve()
    / "screenshots"
)
SEED = 9100  # distinct from the seeds other test modules index into the shared collection
GOOD_IMAGES = 11
ACTIVE = {"queued", "scanning", "embedding", "finalizing"}
MOBILE = "mobile"  # the named collection created through the UI
MOBILE_IMAGES = 6

# How long the page may take to show one answer of the service (a search, the next poll of a
# job, a page of thumbnails). Generous, because a slow CPU, or the worker embedding beside
# the API, only makes answers slower; a broken page still fails, only later. Waits for a load
# job go by the job itself (`JobWatch`), not by the clock.
SERVICE_TIMEOUT_MS = 120_000
# A load job whose progress, and that of the jobs ahead of it, has not moved for this long is
# stuck, however slow the CPU: each batch of images moves `processed`.
JOB_STALL_S = 300.0

expect.set_options(timeout=SERVICE_TIMEOUT_MS)


@dataclass
class UiStack:
    api_url: str
    images_root: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=SERVICE_TIMEOUT_MS / 1000)


@dataclass
class Dataset:
    folder: Path  # resolved
    images: list[Path]  # resolved
    bad: Path


@dataclass
class Collection:
    name: str
    folder: Path  # resolved
    images: list[Path]  # resolved


@dataclass
class Dupes:
    folder: Path  # resolved
    original: Path  # resolved; `copies` hold the very same bytes
    copies: list[Path]
    others: list[Path]


@pytest.fixture(scope="module")
def ui(request: pytest.FixtureRequest) -> UiStack:
    """The running service, from the shared session `stack` fixture (tests/conftest.py)."""
    try:
        stack = request.getfixturevalue("stack")
    except pytest.FixtureLookupError:
        pytest.skip("browser tests need the `stack` fixture from tests/conftest.py")
    return UiStack(api_url=str(stack.api_url).rstrip("/"), images_root=Path(stack.images_root))


@pytest.fixture(scope="module")
def dataset(ui: UiStack) -> Dataset:
    """11 distinct JPEGs and one file with an image extension that is not an image."""
    folder = ui.images_root / f"ui_photos_{uuid.uuid4().hex[:8]}"
    images = write_distinct_set(folder, GOOD_IMAGES, start=SEED)
    bad = folder / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG " * 40)
    return Dataset(folder.resolve(), [p.resolve() for p in images], bad.resolve())


class JobWatch:
    """A load job as the service reports it. `running()` is true until the job is over, and
    fails once neither the job nor any other running job has moved for `JOB_STALL_S`: a
    queued job waits for the ones ahead of it, so their progress counts too."""

    def __init__(self, client: httpx.Client, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.job: dict[str, Any] = {}
        self._mark: object = None
        self._moved_at = time.monotonic()

    def running(self) -> bool:
        self.job = self.client.get(f"/api/v1/loads/{self.job_id}").json()
        if self.job["state"] not in ACTIVE:
            return False
        jobs = self.client.get("/api/v1/loads", params={"limit": 500}).json()["jobs"]
        mark = {
            j["job_id"]: (j["state"], j["discovered"], j["processed"])
            for j in [*jobs, self.job]
            if j["state"] in ACTIVE
        }
        now = time.monotonic()
        if mark != self._mark:
            self._mark, self._moved_at = mark, now
        assert now - self._moved_at < JOB_STALL_S, (
            f"job {self.job_id} made no progress in {JOB_STALL_S:.0f} s: {self.job}"
        )
        return True


def _wait_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once it is over; no deadline while it (or the jobs ahead of it) progresses."""
    watch = JobWatch(client, job_id)
    while watch.running():
        time.sleep(0.3)
    return watch.job


def _jobs_for(client: httpx.Client, folder: Path) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get("/api/v1/loads", params={"limit": 500}).json()["jobs"]
    return [j for j in jobs if j["path"] == str(folder)]


@pytest.fixture(scope="module")
def indexed(ui: UiStack, dataset: Dataset) -> Dataset:
    """`dataset`, indexed: reuses the UI load of the first test, or loads it through the API."""
    with ui.client() as client:
        for job in _jobs_for(client, dataset.folder):
            if job["state"] in ACTIVE:
                job = _wait_job(client, job["job_id"])
            if job["state"] == "succeeded":
                return dataset
        resp = client.post("/api/v1/loads", json={"path": str(dataset.folder)})
        assert resp.status_code == 202, resp.text
        assert _wait_job(client, resp.json()["job_id"])["state"] == "succeeded"
    return dataset


def _collection_count(client: httpx.Client, name: str) -> int | None:
    listed = client.get("/api/v1/collections").json()["collections"]
    return next((int(c["count"]) for c in listed if c["name"] == name), None)


@pytest.fixture(scope="module")
def mobile_folder(ui: UiStack) -> Collection:
    folder = ui.images_root / f"ui_mobile_{uuid.uuid4().hex[:8]}"
    images = write_distinct_set(folder, MOBILE_IMAGES, start=SEED + 400)
    return Collection(MOBILE, folder.resolve(), [p.resolve() for p in images])


@pytest.fixture(scope="module")
def drop_mobile(ui: UiStack) -> Iterator[None]:
    """No "mobile" collection before the module's first use of it, none after the module:
    other test modules create a collection of that name in the shared stack."""
    with ui.client() as client:
        client.delete(f"/api/v1/collections/{MOBILE}", params={"confirm": "true"})
    yield
    with ui.client() as client:
        client.delete(f"/api/v1/collections/{MOBILE}", params={"confirm": "true"})


@pytest.fixture(scope="module")
def mobile(ui: UiStack, mobile_folder: Collection, drop_mobile: None) -> Collection:
    """The "mobile" collection (MobileNetV2, SPoC) holding `mobile_folder`: the one the UI
    test created, or created and loaded through the API."""
    with ui.client() as client:
        if _collection_count(client, MOBILE) is None:
            created = client.post(
                "/api/v1/collections",
                json={"name": MOBILE, "model": "mobilenet_v2", "pooling": "spoc"},
            )
            assert created.status_code == 201, created.text
        if not [j for j in _jobs_for(client, mobile_folder.folder) if j["state"] == "succeeded"]:
            resp = client.post(
                "/api/v1/loads", json={"path": str(mobile_folder.folder), "collection": MOBILE}
            )
            assert resp.status_code == 202, resp.text
            assert _wait_job(client, resp.json()["job_id"])["state"] == "succeeded"
    return mobile_folder


@pytest.fixture(scope="module")
def dupes(ui: UiStack) -> Dupes:
    """A folder in the default collection: one image, two byte-identical copies, 3 others."""
    folder = (ui.images_root / f"ui_dupes_{uuid.uuid4().hex[:8]}").resolve()
    images = write_distinct_set(folder, 4, start=SEED + 500)
    copies = [folder / "copy_a.jpg", folder / "sub" / "copy_b.jpg"]
    for copy in copies:
        copy.parent.mkdir(exist_ok=True)
        shutil.copyfile(images[0], copy)
    with ui.client() as client:
        resp = client.post("/api/v1/loads", json={"path": str(folder)})
        assert resp.status_code == 202, resp.text
        assert _wait_job(client, resp.json()["job_id"])["state"] == "succeeded"
    return Dupes(folder, images[0].resolve(), copies, [p.resolve() for p in images[1:]])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _new_page(browser: Browser, ui: UiStack, **context_args: Any) -> tuple[Page, list[str]]:
    context = browser.new_context(base_url=ui.api_url, **context_args)
    page = context.new_page()
    page.set_default_timeout(SERVICE_TIMEOUT_MS)
    page_errors: list[str] = []
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    page.goto("/")
    expect(page.locator("html")).to_have_attribute("data-ready", "true")
    return page, page_errors


@pytest.fixture
def page(browser: Browser, ui: UiStack) -> Iterator[Page]:
    """A fresh desktop-sized page (own storage) on the app; fails on uncaught JS errors."""
    page, page_errors = _new_page(browser, ui, viewport={"width": 1280, "height": 900})
    yield page
    page.context.close()
    assert not page_errors, f"uncaught errors in the page: {page_errors}"


def shot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def drop_file(page: Page, selector: str, name: str, data: bytes, mime: str) -> None:
    """Simulate dragging a file from the desktop and dropping it on `selector`."""
    page.evaluate(
        """([selector, name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { bubbles: true, cancelable: true, dataTransfer: dt };
                target.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        [selector, name, _b64(data), mime],
    )


def paste_file(page: Page, name: str, data: bytes, mime: str) -> None:
    """Simulate pasting an image from the clipboard (Ctrl+V) onto the page."""
    page.evaluate(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: mime }));
            const init = { clipboardData: dt, bubbles: true, cancelable: true };
            document.body.dispatchEvent(new ClipboardEvent("paste", init));
        }""",
        [name, _b64(data), mime],
    )


def upload(name: str, mime: str, data: bytes) -> FilePayload:
    return {"name": name, "mimeType": mime, "buffer": data}


def query_bytes(seed: int) -> bytes:
    return jpeg_bytes(near_duplicate(distinct_image(seed)))


def image_loaded(page: Page, selector: str) -> bool:
    return bool(page.eval_on_selector(selector, "img => img.complete && img.naturalWidth > 0"))


def wait_thumbnails(page: Page, count: int = 4) -> None:
    page.wait_for_function(
        f"() => [...document.querySelectorAll('[data-testid=result] img')].slice(0, {count})"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )


def result_paths(page: Page) -> list[str]:
    paths: list[str] = page.eval_on_selector_all(
        "[data-testid=result]", "els => els.map(e => e.dataset.path)"
    )
    return paths


def result_scores(page: Page) -> list[float]:
    scores: list[str] = page.eval_on_selector_all(
        "[data-testid=result]", "els => els.map(e => e.dataset.score)"
    )
    return [float(s) for s in scores]


def search_with(page: Page, name: str, data: bytes) -> None:
    """Search with a file through the file picker and wait until the answer is shown."""
    with page.expect_response(lambda r: r.url.endswith("/api/v1/search")) as answer:
        page.get_by_test_id("search-file-input").set_input_files(
            files=[upload(name, "image/jpeg", data)]
        )
    assert answer.value.ok, answer.value.text()
    expect(page.get_by_test_id("results")).not_to_have_attribute("aria-busy", "true")


def job_card(page: Page, job_id: str) -> Any:
    return page.locator(f"[data-testid=job][data-job-id='{job_id}']")


def wait_job_succeeded(ui: UiStack, job_id: str) -> None:
    """Wait for the job through the service, by its progress rather than a deadline; its
    card then shows the end at the page's next poll."""
    with ui.client() as client:
        job = _wait_job(client, job_id)
    assert job["state"] == "succeeded", job


# ------------------------------------------------------------------------------------- tests


def test_load_folder_through_ui(page: Page, ui: UiStack, dataset: Dataset) -> None:
    """Pick the folder with the folder picker, click Load once, watch the bar to success."""
    with ui.client() as client:
        roots = client.get("/api/v1/roots").json()["roots"]
    expect(page.get_by_test_id("roots")).to_contain_text(roots[0])
    shot(page, "01-initial")

    # Type the images root, then browse into the dataset folder with the picker.
    page.get_by_label("Folder to index").fill(str(ui.images_root))
    page.get_by_test_id("browse-button").click()
    picker = page.get_by_test_id("folder-picker")
    expect(picker).to_be_visible()
    picker.locator(f"[data-testid=picker-folder][data-path='{dataset.folder}']").click()
    expect(page.get_by_test_id("picker-path")).to_have_text(str(dataset.folder))
    expect(page.get_by_test_id("picker-info")).to_contain_text("12 image files")
    shot(page, "02-folder-picker", full_page=False)
    page.get_by_test_id("picker-choose").click()
    expect(picker).to_be_hidden()
    expect(page.get_by_test_id("folder-input")).to_have_value(str(dataset.folder))

    # Two clicks in the same task: the button is disabled by the first, so one job only.
    page.eval_on_selector("[data-testid=load-button]", "b => { b.click(); b.click(); }")
    card = page.locator("[data-testid=job][data-job-id]").filter(
        has=page.get_by_test_id("job-path").get_by_text(str(dataset.folder), exact=True)
    )
    expect(card).to_have_count(1)

    # Watch the card while the service says the job runs, then until the card shows its end.
    states: list[str] = []
    values: list[str | None] = []
    progress_shot = False

    def sample_card() -> None:
        nonlocal progress_shot
        job_state = card.get_attribute("data-state") or ""
        value = card.get_by_test_id("job-progress").get_attribute("aria-valuenow")
        if not states or states[-1] != job_state:
            states.append(job_state)
        if not values or values[-1] != value:
            values.append(value)
        if job_state in ACTIVE and not progress_shot:
            shot(page, "03-load-in-progress")
            progress_shot = True

    sample_card()
    with ui.client() as client:
        watch = JobWatch(client, card.get_attribute("data-job-id") or "")
        while watch.running():
            sample_card()
            time.sleep(0.1)
    expect(card).to_have_attribute("data-state", re.compile(r"^(succeeded|failed|cancelled)$"))
    sample_card()

    assert states[0] in ACTIVE, f"the bar never showed the job running: {states}"
    assert states[-1] == "succeeded", states
    assert values[-1] == "100", values
    expect(card.get_by_test_id("job-state")).to_have_text("Succeeded")
    expect(card.get_by_test_id("job-done")).to_have_text("12 / 12")
    expect(card.get_by_test_id("job-indexed")).to_have_text(str(GOOD_IMAGES))
    expect(card.get_by_test_id("job-failed")).to_have_text("1")
    expect(card.get_by_test_id("job-unchanged")).to_have_text("0")
    expect(card.get_by_test_id("job-cancel")).to_be_hidden()

    errors = card.get_by_test_id("job-errors")
    expect(errors).to_be_visible()
    errors.locator("summary").click()
    failed = errors.get_by_test_id("job-error")
    expect(failed).to_have_count(1)
    expect(failed).to_have_attribute("data-path", str(dataset.bad))
    expect(failed.locator("code")).to_have_text(dataset.bad.name)  # shown relative to the job
    assert (failed.locator(".reason").text_content() or "").strip(), "no failure reason shown"
    expect(page.get_by_test_id("stat-count")).not_to_have_text("0")
    page.wait_for_timeout(600)  # let the bar's width transition finish for the screenshot
    shot(page, "04-load-done")

    # Progress comes from the server, not page memory: it survives a reload.
    page.reload()
    expect(card).to_have_attribute("data-state", "succeeded")
    expect(card.get_by_test_id("job-failed")).to_have_text("1")

    with ui.client() as client:
        assert len(_jobs_for(client, dataset.folder)) == 1, "Load was submitted twice"


def test_search_by_drop_then_more_like_this(page: Page, indexed: Dataset) -> None:
    """A dropped near-duplicate finds its original first; the viewer's "more like this" works."""
    target = indexed.images[5]
    drop_file(page, "[data-testid=drop-zone]", "holiday.jpg", query_bytes(SEED + 5), "image/jpeg")
    results = page.get_by_test_id("result")
    expect(results.first).to_have_attribute("data-path", str(target))
    assert results.count() > 1
    expect(page.get_by_test_id("query")).to_be_visible()
    expect(page.get_by_test_id("query-caption")).to_contain_text("holiday.jpg")
    expect(page.get_by_test_id("results-summary")).to_contain_text("results")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=result] img')].slice(0, 4)"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert image_loaded(page, "[data-testid=query-image]")
    score = float(results.first.get_by_test_id("result-score").inner_text())
    assert 0.9 < score <= 1.0
    expect(results.first.get_by_test_id("result-path")).to_have_text(target.name)
    shot(page, "05-search-results")

    results.first.click()
    viewer = page.get_by_test_id("viewer")
    expect(viewer).to_be_visible()
    expect(page.get_by_test_id("viewer-path")).to_have_text(str(target))
    page.wait_for_function(
        "() => { const i = document.querySelector('#viewer-image'); "
        "return i.complete && i.naturalWidth > 0; }"
    )
    shot(page, "06-viewer", full_page=False)

    page.get_by_test_id("more-like-this").click()
    expect(viewer).to_be_hidden()
    expect(page.get_by_test_id("results-summary")).to_contain_text(f"like {target.name}")
    expect(page.get_by_test_id("query-caption")).to_have_text(f"More like {target.name}")
    expect(results.first).to_be_visible()
    paths = [results.nth(i).get_attribute("data-path") for i in range(results.count())]
    assert str(target) not in paths, "the image itself must be left out of 'more like this'"
    assert set(paths) & {str(p) for p in indexed.images}
    shot(page, "07-more-like-this")

    # The top_k control re-runs the current query.
    page.get_by_label("Results to show").fill("3")
    page.get_by_label("Results to show").press("Enter")
    expect(results).to_have_count(3)


def test_two_loads_each_with_own_bar_and_cancel(page: Page, ui: UiStack, indexed: Dataset) -> None:
    """Two loads at once get a bar each; Cancel stops one; search works meanwhile."""
    first = ui.images_root / f"ui_many_{uuid.uuid4().hex[:6]}"
    second = ui.images_root / f"ui_more_{uuid.uuid4().hex[:6]}"
    write_distinct_set(first, 24, start=SEED + 200)
    write_distinct_set(second, 8, start=SEED + 300)
    folder = page.get_by_label("Folder to index")
    for path in (first, second):
        folder.fill(str(path.resolve()))
        page.get_by_test_id("load-button").click()
        expect(page.get_by_test_id("load-button")).to_be_enabled()

    def card_for(path: Path) -> Any:
        return page.get_by_test_id("job").filter(
            has=page.get_by_test_id("job-path").get_by_text(str(path.resolve()), exact=True)
        )

    one, two = card_for(first), card_for(second)
    expect(one).to_have_count(1)
    expect(two).to_have_count(1)
    expect(one.get_by_test_id("job-progress")).to_be_visible()
    expect(two.get_by_test_id("job-progress")).to_be_visible()
    # Newest first: the second folder's card is above the first's.
    assert page.get_by_test_id("job").first.get_attribute("data-job-id") == two.get_attribute(
        "data-job-id"
    )

    # One worker: the second job waits behind the first, so cancelling it is deterministic.
    expect(two.get_by_test_id("job-cancel")).to_be_visible()
    two.get_by_test_id("job-cancel").click()
    expect(two).to_have_attribute("data-state", "cancelled")
    expect(two.get_by_test_id("job-message")).to_contain_text("cancelled")
    expect(two.get_by_test_id("job-cancel")).to_be_hidden()

    # Searching does not wait for loads to finish.
    page.get_by_test_id("search-file-input").set_input_files(
        files=[upload("during-load.jpg", "image/jpeg", query_bytes(SEED + 1))]
    )
    expect(page.get_by_test_id("result").first).to_have_attribute(
        "data-path", str(indexed.images[1])
    )
    shot(page, "08-two-loads-one-cancelled")

    wait_job_succeeded(ui, one.get_attribute("data-job-id") or "")
    expect(one).to_have_attribute("data-state", "succeeded")
    expect(one.get_by_test_id("job-done")).to_have_text("24 / 24")


def test_search_by_paste(page: Page, indexed: Dataset) -> None:
    """An image pasted from the clipboard is searched (near-duplicate finds its original)."""
    paste_file(page, "pasted.jpg", query_bytes(SEED + 2), "image/jpeg")
    expect(page.get_by_test_id("result").first).to_have_attribute(
        "data-path", str(indexed.images[2])
    )
    expect(page.get_by_test_id("query-caption")).to_contain_text("pasted.jpg")


def test_errors_are_readable(page: Page, ui: UiStack) -> None:
    """Folder outside the roots, missing folder, non-image upload, outage, 401: all shown."""
    load_messages = page.get_by_test_id("load-messages")
    search_messages = page.get_by_test_id("search-messages")
    assert load_messages.get_attribute("aria-live") == "polite"
    assert search_messages.get_attribute("aria-live") == "polite"

    page.get_by_label("Folder to index").fill("/etc")
    page.get_by_test_id("load-button").click()
    error = load_messages.get_by_test_id("error-message")
    expect(error).to_contain_text("outside the allowed image roots")
    expect(error).to_contain_text(str(ui.images_root.resolve()))
    shot(page, "09-error-outside-roots")

    page.get_by_label("Folder to index").fill("photos/holiday")
    page.get_by_test_id("load-button").click()
    expect(error).to_contain_text("absolute path")

    page.get_by_label("Folder to index").fill(str(ui.images_root / "no-such-folder"))
    page.get_by_test_id("load-button").click()
    expect(error).to_contain_text("Folder not found")

    page.get_by_test_id("search-file-input").set_input_files(
        files=[upload("notes.txt", "text/plain", b"just some text\n" * 20)]
    )
    upload_error = search_messages.get_by_test_id("error-message")
    expect(upload_error).to_contain_text("not an image Picsearch can read")
    expect(page.get_by_test_id("query")).to_be_hidden()
    expect(page.get_by_test_id("result")).to_have_count(0)
    shot(page, "10-error-not-an-image")

    # The service going away mid-search is reported, not swallowed.
    page.route("**/api/v1/search", lambda route: route.abort("connectionrefused"))
    page.get_by_test_id("search-file-input").set_input_files(
        files=[upload("q.jpg", "image/jpeg", query_bytes(SEED))]
    )
    expect(upload_error).to_contain_text("Cannot reach the Picsearch service")
    page.unroute("**/api/v1/search")

    # A server with an API key answers 401 to a load without one.
    page.route(
        "**/api/v1/loads",
        lambda route: (
            route.fulfill(
                status=401,
                json={"error": "unauthorized", "message": "missing or wrong X-API-Key header"},
            )
            if route.request.method == "POST"
            else route.continue_()
        ),
    )
    page.get_by_label("Folder to index").fill(str(ui.images_root))
    page.get_by_test_id("load-button").click()
    expect(error).to_contain_text("requires an API key")


def test_random_weights_warning_and_clear_confirmation(page: Page, ui: UiStack) -> None:
    """The random-weights banner shows; Clear asks in a <dialog> and only then sends DELETE."""
    warning = page.get_by_test_id("random-weights-warning")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Random weights")
    expect(page.get_by_test_id("stat-weights")).to_contain_text("random")
    expect(page.get_by_test_id("stat-model")).to_contain_text("vgg16")

    deletes: list[str] = []
    page.on("request", lambda r: deletes.append(r.url) if r.method == "DELETE" else None)
    dialog = page.get_by_test_id("confirm-dialog")
    page.get_by_test_id("clear-collection").click()
    expect(dialog).to_be_visible()
    shot(page, "11-confirm-clear", full_page=False)
    page.get_by_test_id("confirm-cancel").click()
    expect(dialog).to_be_hidden()
    page.get_by_test_id("clear-collection").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # Esc also cancels
    expect(dialog).to_be_hidden()
    page.wait_for_timeout(300)
    assert deletes == [], "cancelling must not clear the collection"

    # Confirming sends DELETE ?confirm=true; answered here so the shared collection survives.
    page.route(
        "**/api/v1/collection?confirm=true",
        lambda route: route.fulfill(json={"dropped": 42, "cancelled_jobs": []}),
    )
    page.get_by_test_id("clear-collection").click()
    page.get_by_test_id("confirm-clear").click()
    expect(page.get_by_test_id("global-messages")).to_contain_text(
        "Collection cleared: 42 vectors removed"
    )
    assert len(deletes) == 1 and deletes[0].endswith("/api/v1/collection?confirm=true"), deletes


def test_phone_width(browser: Browser, ui: UiStack, indexed: Dataset) -> None:
    """At 390×844 nothing overflows sideways, results use two columns, keyboard opens a result."""
    page, page_errors = _new_page(
        browser,
        ui,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    try:
        page.get_by_test_id("search-file-input").set_input_files(
            files=[upload("phone.jpg", "image/jpeg", query_bytes(SEED + 7))]
        )
        results = page.get_by_test_id("result")
        expect(results.first).to_have_attribute("data-path", str(indexed.images[7]))
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=result] img')].slice(0, 4)"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"page is {width}px wide at a 390px viewport"
        first, second = results.nth(0).bounding_box(), results.nth(1).bounding_box()
        assert first and second and abs(first["y"] - second["y"]) < 2, "expected 2 columns"
        assert first["width"] > 120
        shot(page, "12-phone")

        results.first.focus()
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("viewer")).to_be_visible()
        shot(page, "13-phone-viewer", full_page=False)
        page.keyboard.press("Escape")
        expect(page.get_by_test_id("viewer")).to_be_hidden()
    finally:
        page.context.close()
    assert not page_errors, f"uncaught errors in the page: {page_errors}"


def test_new_collection_load_search_and_switch_back(
    page: Page, ui: UiStack, mobile_folder: Collection, drop_mobile: None
) -> None:
    """Create "mobile" (MobileNetV2, SPoC) in the dialog, load into it, search it, switch back."""
    with ui.client() as client:
        default = client.get("/api/v1/stats").json()
        listed = client.get("/api/v1/collections").json()["collections"]
    select = page.get_by_test_id("collection-select")
    expect(select).to_have_value(default["collection"])
    expect(select.locator("option")).to_have_count(len(listed))
    expect(select.locator("option").first).to_have_text(
        f"{default['collection']} (default) · {default['count']:,} images · vgg16"
    )

    page.get_by_test_id("new-collection-button").click()
    dialog = page.get_by_test_id("new-collection-dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Name").fill("2fast")
    page.get_by_test_id("new-collection-create").click()
    expect(page.get_by_test_id("new-collection-error")).to_contain_text("not a valid name")
    page.get_by_label("Name").fill(MOBILE)
    page.get_by_label("Model").select_option("mobilenet_v2")
    page.get_by_label("Pooling").select_option("spoc")
    shot(page, "14-new-collection-dialog", full_page=False)
    page.get_by_test_id("new-collection-create").click()
    expect(dialog).to_be_hidden()

    # The new collection is selected, in the page, the URL and storage.
    expect(select).to_have_value(MOBILE)
    expect(page.get_by_test_id("stat-model")).to_contain_text("mobilenet_v2 (1280-d")
    expect(page.get_by_test_id("stat-count")).to_have_text("0")
    expect(page.get_by_test_id("load-target")).to_have_text(MOBILE)
    expect(page.get_by_test_id("clear-collection")).to_have_text("Delete collection…")
    expect(page).to_have_url(re.compile(rf"\?collection={MOBILE}$"))
    assert page.evaluate("() => localStorage.getItem('picsearch.collection')") == MOBILE

    # Load a folder into it; the job card names the collection.
    page.get_by_label("Folder to index").fill(str(mobile_folder.folder))
    with page.expect_response(lambda r: r.url.endswith("/api/v1/loads")) as answer:
        page.get_by_test_id("load-button").click()
    assert answer.value.request.post_data_json == {
        "path": str(mobile_folder.folder),
        "collection": MOBILE,
    }
    card = job_card(page, answer.value.json()["job_id"])
    expect(card.get_by_test_id("job-collection")).to_have_text(f"collection {MOBILE}")
    wait_job_succeeded(ui, answer.value.json()["job_id"])
    expect(card).to_have_attribute("data-state", "succeeded")
    expect(card.get_by_test_id("job-done")).to_have_text(f"{MOBILE_IMAGES} / {MOBILE_IMAGES}")
    expect(page.get_by_test_id("stat-count")).to_have_text(str(MOBILE_IMAGES))
    expect(select.locator(f"option[value={MOBILE}]")).to_have_text(
        f"{MOBILE} · {MOBILE_IMAGES} images · mobilenet_v2"
    )

    # Random MobileNetV2 weights rank near-duplicates poorly, but the very same bytes come
    # back first with cosine 1, and only this collection's images come back at all.
    target = mobile_folder.images[2]
    search_with(page, "exact-copy.jpg", target.read_bytes())
    results = page.get_by_test_id("result")
    expect(results.first).to_have_attribute("data-path", str(target))
    assert result_scores(page)[0] >= 0.9999
    expect(page.get_by_test_id("results-summary")).to_contain_text(f"results in {MOBILE}")
    paths = result_paths(page)
    assert len(paths) == MOBILE_IMAGES
    assert set(paths) == {str(p) for p in mobile_folder.images}
    wait_thumbnails(page)  # thumbnails of a named collection are served too
    shot(page, "15-collection-search")

    # The choice survives a reload, and a visit without ?collection= (local storage).
    page.goto("/")
    expect(select).to_have_value(MOBILE)
    expect(page).to_have_url(re.compile(rf"\?collection={MOBILE}$"))
    expect(page.get_by_test_id("stat-model")).to_contain_text("mobilenet_v2")

    # Back to the default collection: its stats, no URL parameter, no stale results.
    select.select_option(default["collection"])
    expect(page.get_by_test_id("stat-model")).to_contain_text("vgg16")
    expect(page).not_to_have_url(re.compile(r"collection="))
    expect(page.get_by_test_id("clear-collection")).to_have_text("Clear collection…")
    expect(results).to_have_count(0)
    with ui.client() as client:
        expect(page.get_by_test_id("stat-count")).to_have_text(
            f"{client.get('/api/v1/stats').json()['count']:,}"
        )
    shot(page, "16-back-to-default")


def test_prune_checkbox_reports_pruned(page: Page, ui: UiStack) -> None:
    """Reload with "prune" after a file was deleted on disk: the card says "pruned 1"."""
    folder = (ui.images_root / f"ui_prune_{uuid.uuid4().hex[:6]}").resolve()
    files = write_distinct_set(folder, 4, start=SEED + 600)
    with ui.client() as client:
        resp = client.post("/api/v1/loads", json={"path": str(folder)})
        assert _wait_job(client, resp.json()["job_id"])["state"] == "succeeded"
    files[1].unlink()

    page.get_by_label("Folder to index").fill(str(folder))
    page.get_by_label("Remove vectors of deleted files (prune)").check()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/loads")) as answer:
        page.get_by_test_id("load-button").click()
    assert answer.value.request.post_data_json == {"path": str(folder), "prune": True}
    card = job_card(page, answer.value.json()["job_id"])
    wait_job_succeeded(ui, answer.value.json()["job_id"])
    expect(card).to_have_attribute("data-state", "succeeded")
    expect(card.get_by_test_id("job-pruned")).to_have_text("pruned 1")
    expect(card.get_by_test_id("job-unchanged")).to_have_text("3")
    expect(card.get_by_test_id("job-indexed")).to_have_text("0")
    expect(card.get_by_test_id("job-collection")).to_be_hidden()  # the default collection
    shot(page, "17-prune-pruned")
    with ui.client() as client:
        gone = client.get(f"/api/v1/images/{image_id(str(files[1]))}")
        assert gone.status_code == 404


def test_search_options_min_score_folder_and_merge(page: Page, dupes: Dupes) -> None:
    """Folder restriction, minimum score and "merge identical" change the results as promised."""
    identical = {str(dupes.original), *map(str, dupes.copies)}
    options = page.get_by_test_id("search-options")
    options.locator("summary").click()
    page.get_by_label("Only images under folder").fill(str(dupes.folder))
    search_with(page, "original.jpg", dupes.original.read_bytes())
    paths, scores = result_paths(page), result_scores(page)
    assert len(paths) == 6 and all(p.startswith(f"{dupes.folder}/") for p in paths), paths
    assert set(paths[:3]) == identical and min(scores[:3]) >= 0.9999, (paths, scores)
    assert max(scores[3:]) < 0.999, scores
    expect(page.get_by_test_id("results-summary")).to_contain_text(f"under …/{dupes.folder.name}")

    # A minimum score leaves out the weaker matches (re-runs the shown query).
    page.get_by_label("Minimum score").fill("0.999")
    page.get_by_label("Minimum score").press("Enter")
    expect(page.get_by_test_id("result")).to_have_count(3)
    assert set(result_paths(page)) == identical
    assert min(result_scores(page)) >= 0.999
    expect(page.get_by_test_id("options-state")).to_contain_text("score ≥ 0.999")

    # Merging identical files: one result, "+2 identical", the copies listed in the viewer.
    page.get_by_label("Merge identical files").check()
    results = page.get_by_test_id("result")
    expect(results).to_have_count(1)
    expect(results.first.get_by_test_id("result-duplicates")).to_have_text("+2 identical")
    merged = results.first.get_attribute("data-path")
    wait_thumbnails(page, 1)
    shot(page, "18-search-options-merged")
    results.first.click()
    dups = page.get_by_test_id("viewer-duplicates")
    expect(dups).to_be_visible()
    expect(dups.get_by_test_id("viewer-duplicate")).to_have_count(2)
    listed = set(dups.get_by_test_id("viewer-duplicate").all_inner_texts())
    assert listed | {merged} == identical
    shot(page, "19-viewer-identical-files", full_page=False)
    page.keyboard.press("Escape")

    # Without the minimum score the others come back, the identical files still merged.
    page.get_by_label("Minimum score").fill("")
    page.get_by_label("Minimum score").press("Enter")
    expect(results).to_have_count(4)
    expect(page.get_by_test_id("result-duplicates")).to_have_count(1)

    # A relative folder is refused in the page, before any request.
    page.get_by_label("Only images under folder").fill("photos")
    page.get_by_label("Only images under folder").press("Enter")
    expect(page.get_by_test_id("search-messages")).to_contain_text("absolute path")

    page.get_by_label("Only images under folder").fill(str(dupes.folder))
    page.get_by_label("Minimum score").fill("0.5")
    page.get_by_label("Minimum score").press("Enter")
    expect(page.get_by_test_id("results-summary")).to_contain_text("score ≥ 0.5")
    expect(page.get_by_test_id("search-messages")).to_be_empty()

    # At phone width: the collection bar and the open options fit, nothing overflows.
    page.set_viewport_size({"width": 390, "height": 844})
    wait_thumbnails(page)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"page is {width}px wide at a 390px viewport"
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, "20-phone-collection-bar", full_page=False)
    options.scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('#search-options').scrollIntoView()")
    shot(page, "21-phone-search-options", full_page=False)


def test_remove_from_index_then_delete_collection(
    page: Page, ui: UiStack, mobile: Collection
) -> None:
    """In "mobile" (opened by URL): remove a result from the index, then drop the collection."""
    page.goto(f"/?collection={MOBILE}")
    expect(page.get_by_test_id("collection-select")).to_have_value(MOBILE)
    with ui.client() as client:
        before = _collection_count(client, MOBILE)
    assert before
    expect(page.get_by_test_id("stat-count")).to_have_text(str(before))

    target = mobile.images[3]
    search_with(page, "again.jpg", target.read_bytes())
    results = page.get_by_test_id("result")
    expect(results.first).to_have_attribute("data-path", str(target))
    shown = results.count()
    results.first.click()
    page.get_by_test_id("viewer-remove").click()
    confirm = page.get_by_test_id("remove-dialog")
    expect(confirm).to_be_visible()
    expect(page.get_by_test_id("remove-path")).to_have_text(str(target))
    shot(page, "22-confirm-remove", full_page=False)
    page.get_by_test_id("remove-cancel").click()
    expect(confirm).to_be_hidden()
    expect(page.get_by_test_id("viewer")).to_be_visible()  # cancelling keeps the viewer

    with page.expect_response(lambda r: r.request.method == "DELETE") as answer:
        page.get_by_test_id("viewer-remove").click()
        page.get_by_test_id("remove-confirm").click()
    assert answer.value.url.endswith(f"/api/v1/images/{image_id(str(target))}?collection={MOBILE}")
    assert answer.value.json() == {"deleted": 1}
    expect(page.get_by_test_id("viewer")).to_be_hidden()
    expect(results).to_have_count(shown - 1)
    assert str(target) not in result_paths(page)
    expect(page.get_by_test_id("stat-count")).to_have_text(str(before - 1))
    expect(page.get_by_test_id("search-messages")).to_contain_text("Removed img_")
    shot(page, "23-removed-from-index")

    # Searching again: the file is no longer found in this collection.
    search_with(page, "again.jpg", target.read_bytes())
    assert str(target) not in result_paths(page)

    # "Delete collection…" drops the named collection and selects the default one again.
    page.get_by_test_id("clear-collection").click()
    dialog = page.get_by_test_id("confirm-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("heading")).to_have_text(f"Delete the collection “{MOBILE}”?")
    shot(page, "24-confirm-delete-collection", full_page=False)
    page.get_by_test_id("confirm-clear").click()
    expect(page.get_by_test_id("global-messages")).to_contain_text(
        f"Collection “{MOBILE}” deleted: {before - 1} vectors removed"
    )
    select = page.get_by_test_id("collection-select")
    expect(select.locator(f"option[value={MOBILE}]")).to_have_count(0)
    expect(page.get_by_test_id("stat-model")).to_contain_text("vgg16")
    expect(page).not_to_have_url(re.compile(r"collection="))
    with ui.client() as client:
        assert _collection_count(client, MOBILE) is None

    # An old link to the dropped collection says so and falls back to the default one.
    page.goto(f"/?collection={MOBILE}")
    expect(page.get_by_test_id("global-messages")).to_contain_text(
        f"There is no collection named “{MOBILE}”"
    )
    expect(page.get_by_test_id("stat-model")).to_contain_text("vgg16")
    expect(page).not_to_have_url(re.compile(r"collection="))


def test_upload_limit_and_key_notice(page: Page) -> None:
    """stats.max_upload_bytes refuses big files in the page; stats.api_key_required warns early."""

    def small_limit_with_key(route: Any) -> None:
        stats = route.fetch().json()
        stats.update(max_upload_bytes=1024 * 1024, api_key_required=True)
        route.fulfill(json=stats)

    page.route("**/api/v1/stats*", small_limit_with_key)
    page.reload()
    banner = page.get_by_test_id("api-key-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("needs an API key")
    expect(page.get_by_test_id("settings-button")).to_have_text("Settings · key needed")

    searches: list[str] = []
    page.on("request", lambda r: searches.append(r.url) if "/search" in r.url else None)
    big = b"\xff\xd8\xff\xe0" + bytes(1536 * 1024)
    page.get_by_test_id("search-file-input").set_input_files(
        files=[upload("huge.jpg", "image/jpeg", big)]
    )
    error = page.get_by_test_id("search-messages").get_by_test_id("error-message")
    expect(error).to_contain_text("huge.jpg is 1.5 MB")
    expect(error).to_contain_text("accepts images up to 1.0 MB")
    shot(page, "25-key-needed-and-too-large")
    assert searches == [], "an oversized file must not be uploaded"

    page.get_by_test_id("api-key-banner-button").click()
    page.get_by_test_id("api-key-input").fill("s3cret")
    page.get_by_test_id("api-key-save").click()
    expect(banner).to_be_hidden()
    expect(page.get_by_test_id("settings-button")).to_have_text("Settings · key set")


def test_crop_search_outlines_the_matching_window(page: Page, ui: UiStack) -> None:
    """In a collection with regions, a crop's source comes first with its window outlined."""
    name = f"crops_{uuid.uuid4().hex[:6]}"
    folder = ui.images_root / f"ui_crops_{uuid.uuid4().hex[:8]}"
    images = write_distinct_set(folder, 4, start=SEED + 300)
    with ui.client() as client:
        created = client.post(
            "/api/v1/collections", json={"name": name, "model": "vgg16", "regions": True}
        )
        assert created.status_code == 201, created.text
        job = client.post("/api/v1/loads", json={"path": str(folder), "collection": name})
        assert job.status_code == 202, job.text
    wait_job_succeeded(ui, job.json()["job_id"])
    try:
        page.goto(f"/?collection={name}")
        expect(page.get_by_test_id("stat-model")).to_contain_text("crop search")
        source = images[1]
        crop = Image.open(source).crop((180, 100, 280, 190))  # right half, lower middle
        search_with(page, "detail.jpg", jpeg_bytes(crop, 95))
        first = page.get_by_test_id("result").first
        expect(first).to_have_attribute("data-path", str(source.resolve()))
        outline = first.get_by_test_id("result-region")
        expect(outline).to_have_class(re.compile(r"\bverified\b"))
        frame = first.locator(".thumb").bounding_box()
        box = outline.bounding_box()
        assert frame is not None and box is not None
        # Inside the frame, right of its centre: where the crop was cut from.
        assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
        assert box["x"] + box["width"] / 2 > frame["x"] + frame["width"] / 2
        shot(page, "20-crop-search-outline", full_page=False)
    finally:
        with ui.client() as client:
            client.delete(f"/api/v1/collections/{name}", params={"confirm": "true"})
