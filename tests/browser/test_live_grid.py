"""A person in Chromium: sign in with a one-time link, upload images, watch the live grid, download
the zip; cancel a sequential batch and see the refund in the header.

Screenshots of the upload page and of a finished grid are saved as test artifacts, in
TEST_ARTIFACTS (default: instance/test-artifacts/); docs/ holds copies for the README.
"""

import base64
import io
import os
import re
import threading
import zipfile
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.support import IN_CI, create_user, image_bytes, make_app, running_consumer
from webapp.auth.login_links import create_login_link
from webapp.extensions import db

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", PROJECT_ROOT / "instance" / "test-artifacts"))

TILE_STATUSES = "grid => [...grid.querySelectorAll('.tile')].map(tile => tile.dataset.status)"
# Whether htmx has processed a button's form (htmx records an initHash on each node it processed).
HTMX_PROCESSED = "sel => !!document.querySelector(sel).form['htmx-internal-data']?.initHash"
# Whether the page is wider than the window (a phone would have to scroll sideways).
OVERFLOWS = "() => document.documentElement.scrollWidth > window.innerWidth"

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture
def chromium():
    if not Path(CHROMIUM).exists():
        if IN_CI:
            pytest.fail(f"Chromium is required under CI=true but {CHROMIUM} is missing")
        pytest.skip(f"Chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live_server(tmp_path):
    """The app on a real HTTP port with a real consumer; the engine takes 1.5 s per image."""
    app = make_app(tmp_path, HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=1.5)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with running_consumer(app, workers=2):
        yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


def photos(folder, count):
    """Real images on disk, as a person would pick them: PNG, JPEG and WebP in turn."""
    paths = []
    for index in range(count):
        fmt = ("PNG", "JPEG", "WEBP")[index % 3]
        path = folder / f"photo-{index}.{fmt.lower().replace('jpeg', 'jpg')}"
        path.write_bytes(image_bytes(fmt, size=(320, 240), color=(40 * index % 255, 90, 200)))
        paths.append(str(path))
    return paths


# Logged as errors, and expected: a refused upload's 422, and htmx's notice of a poll cut short
# when the page moves on ("htmx:sendAbort", "htmx:afterRequest").
EXPECTED_NOISE = ("Failed to load resource", "htmx:")


def console_errors(page):
    """Every error the page logs (a refusal by the Content Security Policy among them, or
    htmx finding no element for an attribute) and every uncaught exception, as they happen."""
    errors = []
    page.on(
        "console",
        lambda message: errors.append(f"{message.text} @ {message.location}")
        if message.type == "error" and not message.text.startswith(EXPECTED_NOISE)
        else None,
    )
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def sign_in_with_a_link(page, app, base_url, user_id):
    """What `make run` prints: a one-time link; its page has the button that signs in."""
    with app.app_context():
        token = create_login_link(user_id)
        db.session.commit()
    page.goto(f"{base_url}/auth/link/{token}")
    page.click("#use-link")
    page.wait_for_url(f"{base_url}/")


def drop_file(page, name, raw):
    """Drop a file on the picker, as dragging it from the desktop does."""
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, {type: "image/png"}));
            return transfer;
        }""",
        [name, base64.b64encode(raw).decode()],
    )
    page.dispatch_event("#picker", "drop", {"dataTransfer": transfer})


def watch_grid(page, until):
    """Sample the grid while it polls; answer every tile status seen until `until` is reached."""
    seen = set()
    for _ in range(600):  # at most a minute: the batches here take a few seconds
        grid = page.locator("#batch-grid")
        seen.update(grid.evaluate(TILE_STATUSES))
        if until(grid):
            return seen
        page.wait_for_timeout(100)
    raise AssertionError(f"the grid never got there; it showed {sorted(seen)}")


def test_upload_three_images_watch_the_grid_finish_and_download_the_zip(
    live_server, chromium, tmp_path
):
    app, base_url = live_server
    alice, _ = create_user(app, "alice", credits=100)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)

    sign_in_with_a_link(page, app, base_url, alice)
    assert page.inner_text("#credits") == "alice · 100⭐"

    page.select_option("#model", "nano-banana-pro")  # htmx swaps in that model's choices
    page.wait_for_selector("#quality option[value='4k']", state="attached")
    page.select_option("#model", "flux-2")
    page.wait_for_selector("#quality option[value='2k']", state="attached")
    page.wait_for_selector("#cost-problem:has-text('Choose at least one image')")
    assert page.is_disabled("#generate")  # while the cost line gives a reason
    page.set_input_files("#images", photos(tmp_path, 3))
    page.fill("#prompt", "Add white background")
    page.select_option("#aspectRatio", "1:1")
    page.select_option("#concurrency", "1")
    page.wait_for_selector("#cost-line:has-text('3 images × 3⭐ = 9⭐ · balance 100⭐')")
    page.screenshot(path=str(ARTIFACTS / "upload-page.png"), full_page=True)
    # A PNG with a tail after its end: the browser shows it (its own checks pass it), only the
    # server can tell. (Files the browser can tell are bad never leave it: test_upload_checks.)
    drop_file(page, "broken.png", image_bytes() + b"<html>a tail</html>")
    page.wait_for_selector("#cost-line:has-text('4 images × 3⭐ = 12⭐ · balance 100⭐')")
    page.wait_for_function("() => !document.querySelector('#generate').disabled")
    page.click("#generate")

    # Refused: the form comes back with the problem next to the images, every choice kept,
    # the chosen files too (the picker is preserved across htmx's swap).
    page.wait_for_selector("#images-error:has-text('broken.png has 19 bytes after the end')")
    # The re-rendered cost line counts the images the server took.
    page.wait_for_selector("#cost-line:has-text('3 images × 3⭐ = 9⭐ · balance 100⭐')")
    assert page.input_value("#prompt") == "Add white background"
    assert page.input_value("#aspectRatio") == "1:1"
    assert page.eval_on_selector("#images", "input => input.files.length") == 4
    assert page.locator("#thumbnails li").count() == 4
    page.click("button[aria-label='Remove broken.png']")  # the picker's remove-one
    assert page.inner_text("#images-count") == "3 images chosen."
    page.wait_for_selector("#cost-line:has-text('3 images × 3⭐ = 9⭐ · balance 100⭐')")
    assert page.is_enabled("#generate")
    assert page.inner_text("#credits") == "alice · 100⭐"  # the refused upload cost nothing
    page.click("#generate")

    page.wait_for_url(f"{base_url}/batches/batch_*")
    assert page.locator(".tile").count() == 3
    seen = watch_grid(page, lambda grid: grid.get_attribute("data-status") == "completed")
    assert {"processing", "success"} <= seen  # the grid moved while we watched
    assert page.get_attribute("#batch-grid", "hx-trigger") is None  # and then stopped polling
    assert page.inner_text("#progress-text") == "3 done · 0 failed · 0 cancelled of 3"
    results = page.locator(".tile-success img.result")
    # The last swap put these <img>s in; on a busy machine they may still be loading.
    results.first.wait_for()
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(img => img.complete)",
        arg=".tile-success img.result",
    )
    assert results.evaluate_all("imgs => imgs.map(img => img.naturalWidth)") == [1024, 1024, 1024]
    page.screenshot(path=str(ARTIFACTS / "finished-grid.png"), full_page=True)

    with page.expect_download() as download:
        page.click("#download-all")
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    assert archive.namelist() == ["01-photo-0.png", "02-photo-1.png", "03-photo-2.png"]
    assert page.inner_text("#credits") == "alice · 91⭐"
    # No script error, and nothing the Content Security Policy refused.
    assert sorted(set(errors)) == [], "\n".join(sorted(set(errors)))
    page.close()


def test_cancel_a_sequential_batch_on_a_phone_and_see_the_refund_in_the_header(
    live_server, chromium, tmp_path
):
    app, base_url = live_server
    bob, _ = create_user(app, "bob", credits=100)
    page = chromium.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    errors = console_errors(page)

    sign_in_with_a_link(page, app, base_url, bob)
    assert not page.evaluate(OVERFLOWS)
    page.set_input_files("#images", photos(tmp_path, 8))
    page.fill("#prompt", "Make it grayscale")
    page.select_option("#concurrency", "1")
    page.wait_for_selector("#cost-line:has-text('8 images × 3⭐ = 24⭐ · balance 100⭐')")
    page.click("#generate")
    page.wait_for_url(f"{base_url}/batches/batch_*")
    assert page.inner_text("#credits") == "bob · 76⭐"
    watch_grid(page, lambda grid: grid.locator(".tile-processing").count() == 1)
    assert not page.evaluate(OVERFLOWS)

    page.focus("#cancel-batch")  # by keyboard: the dialog opens on "Keep it running"
    page.keyboard.press("Enter")
    page.wait_for_selector("#cancel-dialog[open] #cancel-preview")
    # It opens once htmx has processed its form, so even an instant Enter cancels in place
    # instead of posting the plain form and leaving the page.
    assert page.evaluate(HTMX_PROCESSED, "#confirm-cancel")
    preview = page.inner_text("#cancel-preview")
    # Between two images of a sequential lane nothing runs for a moment: both sentences are true.
    assert re.fullmatch(
        r"\d images? not started will be refunded \d+⭐"
        r"(; 1 already running will finish and be charged)?\.",
        preview,
    ), preview
    assert page.evaluate("document.activeElement.textContent") == "Keep it running"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # "Cancel the batch"

    page.wait_for_selector("#cancel-notice")
    assert page.get_attribute("#batch-grid", "data-status") == "cancelled"
    assert not page.is_visible("#cancel-dialog")
    cancelled = int(
        re.match(r"Cancelled (\d+) images? not started", page.inner_text("#cancel-notice")).group(1)
    )
    assert cancelled >= 1
    assert page.inner_text("#credits") == f"bob · {76 + 3 * cancelled}⭐"  # refunded at once
    watch_grid(page, lambda grid: grid.get_attribute("hx-trigger") is None)  # the last one ends
    statuses = page.locator("#batch-grid").evaluate(TILE_STATUSES)
    assert statuses.count("cancelled") == cancelled
    assert statuses.count("success") == 8 - cancelled
    page.reload()
    assert page.inner_text("#credits") == f"bob · {100 - 3 * (8 - cancelled)}⭐"
    assert errors == []  # the dialog opened and closed without an inline handler
    page.close()
