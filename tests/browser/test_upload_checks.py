"""A person in Chromium picks files: the bad ones are marked on their thumbnails with the reason
before anything is sent, left out of the count, the cost and the upload; the prompt counts its
characters against the server's limit."""

import pytest

from tests.browser import test_live_grid as live_grid
from tests.browser.test_live_grid import console_errors, photos, sign_in_with_a_link
from tests.support import create_user, image_bytes

# The same Chromium and live server as the live-grid test.
chromium = live_grid.chromium
live_server = live_grid.live_server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

REASONS = "list => [...list.querySelectorAll('li.bad .reason')].map(reason => reason.textContent)"


def bad_files(folder):
    """A text file renamed .png, an empty file, and one that starts like a PNG but holds no
    image: each claims to be a PNG."""
    paths = []
    for name, raw in (
        ("notes.png", b"plain text, renamed to look like an image"),
        ("empty.png", b""),
        ("cut.png", image_bytes()[:8] + b"and then only text"),
    ):
        path = folder / name
        path.write_bytes(raw)
        paths.append(str(path))
    return paths


def test_bad_files_are_marked_before_upload_and_only_the_good_one_is_sent(
    live_server, chromium, tmp_path
):
    app, base_url = live_server
    alice, _ = create_user(app, "alice", credits=100)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, alice)

    page.fill("#prompt", "Add white background")
    page.set_input_files("#images", photos(tmp_path, 1) + bad_files(tmp_path))

    page.wait_for_selector("#cost-line:has-text('1 image × 3⭐ = 3⭐ · balance 100⭐')")
    page.wait_for_function("() => document.querySelectorAll('#thumbnails li.bad').length === 3")
    assert page.locator("#thumbnails").evaluate(REASONS) == [
        "notes.png is not a PNG, JPEG or WebP image",
        "empty.png is empty",
        "cut.png is not a readable PNG, JPEG or WebP image",
    ]
    assert page.locator("#thumbnails li.bad img").count() == 0  # no broken thumbnail
    assert page.locator("#thumbnails li.good img").count() == 1
    assert page.inner_text("#images-count") == (
        "1 image chosen. 3 files are left out: see their reasons."
    )
    assert page.eval_on_selector("#images", "input => [...input.files].map(f => f.name)") == [
        "photo-0.png"
    ]
    assert page.locator("#cost-problem").count() == 0
    page.wait_for_function("() => !document.querySelector('#generate').disabled")
    page.click("#generate")

    page.wait_for_url(f"{base_url}/batches/batch_*")
    assert page.locator(".tile").count() == 1  # the server got the good image alone
    assert page.inner_text("#credits") == "alice · 97⭐"
    assert errors == [], "\n".join(errors)
    page.close()


def test_with_only_bad_files_generate_is_disabled(live_server, chromium, tmp_path):
    app, base_url = live_server
    bob, _ = create_user(app, "bob", credits=100)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, bob)

    page.fill("#prompt", "Add white background")
    page.set_input_files("#images", bad_files(tmp_path))

    page.wait_for_function("() => document.querySelectorAll('#thumbnails li.bad').length === 3")
    page.wait_for_selector("#cost-problem:has-text('Choose at least one image')")
    assert page.is_disabled("#generate")
    assert page.eval_on_selector("#images", "input => input.files.length") == 0
    # Removing a bad file keeps the others marked, and Generate still off.
    page.click("button[aria-label='Remove notes.png']")
    assert page.locator("#thumbnails").evaluate(REASONS) == [
        "empty.png is empty",
        "cut.png is not a readable PNG, JPEG or WebP image",
    ]
    assert page.is_disabled("#generate")
    assert errors == [], "\n".join(errors)
    page.close()


def test_the_prompt_counts_its_characters_against_the_limit_and_says_so_when_typing_pauses(
    live_server, chromium
):
    app, base_url = live_server
    carol, _ = create_user(app, "carol", credits=100)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, carol)

    assert page.get_attribute("#prompt", "maxlength") == "4000"
    assert page.get_attribute("#prompt", "aria-describedby") == "prompt-count"
    assert page.inner_text("#prompt-count") == "0 / 4,000 characters"
    status = page.locator("#prompt-count-status")
    assert status.get_attribute("aria-live") == "polite"

    page.focus("#prompt")
    page.keyboard.type("Add white", delay=30)
    assert page.inner_text("#prompt-count") == "9 / 4,000 characters"  # follows each key
    assert status.inner_text() == ""  # not yet told: typing has not paused
    page.wait_for_function(  # told once, after the pause
        "text => document.querySelector('#prompt-count-status').textContent === text",
        arg="9 / 4,000 characters",
    )

    page.keyboard.insert_text(" " + "x" * 5016)  # a long paste stops at the limit
    assert len(page.input_value("#prompt")) == 4000
    assert page.inner_text("#prompt-count") == "4,000 / 4,000 characters"
    assert errors == [], "\n".join(errors)
    page.close()
