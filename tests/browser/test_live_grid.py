"""A person in Chromium: sign in, upload three images, watch the grid fill, see the results."""

import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.support import IN_CI, create_user, image_bytes, make_app, running_consumer

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

TILE_STATUSES = "grid => [...grid.querySelectorAll('.tile')].map(tile => tile.dataset.status)"

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


def test_upload_and_watch_the_grid_until_every_image_is_done(live_server, chromium, tmp_path):
    app, base_url = live_server
    _, token = create_user(app, "alice", credits=100)
    files = []
    for index, fmt in enumerate(["PNG", "JPEG", "WEBP"]):
        path = tmp_path / f"photo-{index}.{fmt.lower()}"
        path.write_bytes(image_bytes(fmt, size=(320, 240)))
        files.append(str(path))
    page = chromium.new_page()

    page.goto(f"{base_url}/login")
    page.fill("#token", token)
    page.click("#sign-in")
    page.wait_for_url(f"{base_url}/")
    assert "alice · 100⭐" in page.inner_text("#credits")

    page.select_option("#model", "nano-banana-pro")  # htmx swaps in that model's choices
    page.wait_for_selector("#quality option[value='4k']", state="attached")
    page.select_option("#model", "flux-2")
    page.wait_for_selector("#quality option[value='2k']", state="attached")
    page.set_input_files("#images", files)
    page.fill("#prompt", "Add white background")
    page.select_option("#aspectRatio", "1:1")
    page.select_option("#concurrency", "1")
    page.click("#generate")

    page.wait_for_url(f"{base_url}/batches/batch_*")
    assert page.locator(".tile").count() == 3
    statuses_seen = set()
    for _ in range(300):  # up to 30 s; the batch takes about 5
        grid = page.locator("#batch-grid")
        statuses_seen.update(grid.evaluate(TILE_STATUSES))
        if grid.get_attribute("data-status") == "completed":
            break
        page.wait_for_timeout(100)
    assert page.get_attribute("#batch-grid", "data-status") == "completed"
    assert {"processing", "success"} <= statuses_seen  # the grid moved while we watched
    assert page.get_attribute("#batch-grid", "hx-trigger") is None  # and then stopped polling
    widths = page.locator(".tile-success img").evaluate_all(
        "imgs => imgs.map(img => img.complete ? img.naturalWidth : 0)"
    )
    assert widths == [1024, 1024, 1024]
    page.screenshot(path=str(tmp_path / "grid.png"), full_page=True)
    page.reload()
    assert "91⭐" in page.inner_text("#credits")
    page.close()
