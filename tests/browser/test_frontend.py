"""Browser tests of the web UI (frontend/) against the real running stack.

Chromium (Debian's /usr/bin/chromium) drives the page served by the API at `/`; nothing is
mocked except where a test says so (a simulated outage, a 401, and the final DELETE of the
"clear collection" flow, so the shared collection survives). Screenshots of each state go to
`$PICSEARCH_TEST_ARTIFACTS/screenshots` (default `test-artifacts/screenshots`).
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

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

expect.set_options(timeout=15_000)


@dataclass
class UiStack:
    api_url: str
    images_root: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=60)


@dataclass
class Dataset:
    folder: Path  # resolved
    images: list[Path]  # resolved
    bad: Path


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


def _wait_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/api/v1/loads/{job_id}").json()
        if job["state"] not in ACTIVE:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']}"
        time.sleep(0.3)


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
    page.set_default_timeout(15_000)
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

    states: list[str] = []
    values: list[str | None] = []
    progress_shot = False
    deadline = time.monotonic() + 90
    while True:
        job_state = card.get_attribute("data-state") or ""
        value = card.get_by_test_id("job-progress").get_attribute("aria-valuenow")
        if not states or states[-1] != job_state:
            states.append(job_state)
        if not values or values[-1] != value:
            values.append(value)
        if job_state in ACTIVE and not progress_shot:
            shot(page, "03-load-in-progress")
            progress_shot = True
        if job_state not in ACTIVE:
            break
        assert time.monotonic() < deadline, f"load never finished: {states}"
        time.sleep(0.1)

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

    expect(one).to_have_attribute("data-state", "succeeded", timeout=90_000)
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
