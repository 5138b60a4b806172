"""Issue 17 on the batch page, as the server renders it: "New batch with these settings" leads
to the upload page filled in with the batch's settings, and each result's card carries what the
lightbox (static/compare.js, tested in tests/browser/test_compare_results.py) opens."""

import html as entities
import re

from tests.support import batch_body, work_next_image

SETTINGS = {
    "prompt": "Put the vase on a marble table",
    "negativePrompt": "blur, people",
    "quality": "2k",
    "aspectRatio": "4:3",
}


def create(client, images=2, **fields):
    response = client.post("/api/generate/batch", json=batch_body(images, **fields))
    assert response.status_code == 200, response.get_json()
    return response.get_json()["batchId"]


def settings_link(page):
    link = re.search(r'<a class="button secondary" id="new-batch-same" href="([^"]+)">', page)
    assert link, "the batch page has no 'New batch with these settings' link"
    return entities.unescape(link.group(1))


def test_new_batch_with_these_settings_fills_the_upload_page(alice, browser):
    batch_id = create(alice, concurrency=1, **SETTINGS)

    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    assert "New batch with these settings" in page
    target = settings_link(page)
    assert target.startswith("/?")
    form = browser.get(target).get_data(as_text=True)
    assert re.search(r'<option value="flux-2"[^>]*selected', form)
    assert re.search(r'<option value="2k"[^>]*selected', form)
    assert re.search(r'<option value="4:3"[^>]*selected', form)
    assert re.search(r'<textarea id="prompt"[^>]*>Put the vase on a marble table</textarea>', form)
    assert re.search(r'<input id="negativePrompt" name="negativePrompt" value="blur, people"', form)


def test_a_batch_without_a_negative_prompt_links_without_one(alice, browser):
    batch_id = create(alice, prompt="Add white background")

    target = settings_link(browser.get(f"/batches/{batch_id}").get_data(as_text=True))

    assert "negativePrompt" not in target and "prompt=Add+white+background" in target
    assert "model=flux-2" in target and "quality=1k" in target and "aspectRatio=auto" in target


def test_only_a_result_opens_the_lightbox_and_it_knows_its_input(app, alice, browser):
    batch_id = create(alice, 3, concurrency=1)
    work_next_image(app, batch_id)  # succeeds; the others wait

    page = browser.get(f"/batches/{batch_id}").get_data(as_text=True)

    openers = re.findall(r'<a href="([^"]+)"[^>]*class="open-compare" ([^>]*)>', page)
    assert len(openers) == 1
    href, attributes = openers[0]
    assert 'data-name="img-0"' in attributes
    data_input = re.search(r'data-input="([^"]+)"', attributes).group(1)
    assert f'<img class="input" src="{data_input}" alt="Input img-0"' in page
    assert f'<img class="result" src="{href}" alt="Result for img-0"' in page
    # The dialog is outside the grid htmx swaps, named by its title, with a slider to compare.
    grid_end = page.index("</section>", page.index('id="batch-grid"'))
    dialog = page.index('<dialog id="compare-dialog"')
    assert dialog > grid_end
    assert 'aria-labelledby="compare-title"' in page and 'id="compare-close"' in page
    assert re.search(r'<input type="range" id="compare-slider"', page)
    assert "static/compare.js" in page and "static/compare.css" in page
