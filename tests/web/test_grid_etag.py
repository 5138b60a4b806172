"""The batch page's grid fragment as a conditional poll (webapp/conditional.py, generation/etags.py,
static/grid.js): the page's grid holds the tag its first poll sends, the fragment answers the
same tag while nothing changes and 304 with no body on a match only, and a new tag after a
change of the batch or of what the fragment shows around it (the header's balance); and the page
listens to the batch's events only while the batch is not finished."""

import html
import re

import pytest

from tests.api.test_etags import still_clock  # noqa: F401  (a fixture, used by name)
from tests.support import (
    HTMX,
    claim_next_image,
    create_batch_jobs,
    create_user,
    drain,
    finish_claim,
    signed_in_browser,
)

pytestmark = pytest.mark.usefixtures("still_clock")


def page_tag(browser, batch_id):
    """The tag the page's grid holds (data-etag), or None; the page itself carries no ETag."""
    page = browser.get(f"/batches/{batch_id}")
    assert page.status_code == 200 and "ETag" not in page.headers
    found = re.search(r'<section id="batch-grid"[^>]*\sdata-etag="([^"]+)"', page.get_data(True))
    return html.unescape(found.group(1)) if found else None


def poll(browser, batch_id, tag=None):
    headers = {**HTMX, **({"If-None-Match": tag} if tag else {})}
    return browser.get(f"/batches/{batch_id}", headers=headers)


def fresh(browser, batch_id, old):
    """The fragment polled with `old`: a 200 whose body is the grid and whose tag is new."""
    answer = poll(browser, batch_id, old)
    assert answer.status_code == 200
    assert answer.get_data(True).lstrip().startswith('<section id="batch-grid"')
    assert answer.headers["ETag"] != old
    return answer.headers["ETag"]


def unchanged(browser, batch_id, tag):
    answer = poll(browser, batch_id, tag)
    assert answer.status_code == 304 and answer.data == b""
    assert answer.headers["ETag"] == tag
    assert answer.headers["Cache-Control"] == "private, no-cache"
    assert "HX-Request" in answer.headers["Vary"]
    return True


def test_the_pages_tag_is_the_fragments_and_holds_while_nothing_changes(alice, browser):
    batch_id, _ = create_batch_jobs(alice, 2)
    tag = page_tag(browser, batch_id)
    assert tag and tag.startswith('W/"')
    first = poll(browser, batch_id)
    assert first.status_code == 200 and first.headers["ETag"] == tag
    assert page_tag(browser, batch_id) == tag  # looking again moves nothing
    assert unchanged(browser, batch_id, tag) and unchanged(browser, batch_id, tag)


def test_304_only_on_a_match(app, alice, browser):
    batch_id, _ = create_batch_jobs(alice, 2)
    other_id, _ = create_batch_jobs(alice, 1)
    tag = poll(browser, batch_id).headers["ETag"]
    other_tag = poll(browser, other_id).headers["ETag"]
    assert other_tag != tag

    assert poll(browser, batch_id, f'"x", {tag}').status_code == 304  # one of a list
    assert poll(browser, batch_id, tag.removeprefix("W/")).status_code == 304  # compared weakly
    for sent in (other_tag, tag.removeprefix("W/").replace('"', '"0', 1), '"nope"', "W/"):
        assert poll(browser, batch_id, sent).status_code == 200, sent
    # The page is never answered 304, whatever it is sent: only the fragment is conditional.
    page = browser.get(f"/batches/{batch_id}", headers={"If-None-Match": tag})
    assert page.status_code == 200 and "<html" in page.get_data(True)

    stranger = signed_in_browser(app, create_user(app, "mallory")[1])
    for sent in (tag, "*"):
        answer = poll(stranger, batch_id, sent)
        assert answer.status_code == 404 and "ETag" not in answer.headers


def test_a_new_tag_after_each_change_and_none_once_settled(app, alice, browser):
    batch_id, _ = create_batch_jobs(alice, 2, concurrency=1)
    tag = page_tag(browser, batch_id)

    claim = claim_next_image(app, batch_id)
    tag = fresh(browser, batch_id, tag)  # a claim
    assert unchanged(browser, batch_id, tag)
    finish_claim(app, claim)
    tag = fresh(browser, batch_id, tag)  # a success
    assert unchanged(browser, batch_id, tag)
    create_batch_jobs(alice, 1)  # another batch: the header's balance the fragment refreshes
    tag = fresh(browser, batch_id, tag)
    assert unchanged(browser, batch_id, tag)
    assert page_tag(browser, batch_id) == tag

    drain(app)
    tag = fresh(browser, batch_id, tag)  # finished: the last swap, and the grid stops polling
    assert page_tag(browser, batch_id) is None
    assert "hx-trigger" not in poll(browser, batch_id).get_data(True)


def test_the_page_listens_to_the_events_only_while_the_batch_is_not_finished(app, alice, browser):
    batch_id, _ = create_batch_jobs(alice, 1)
    events = f'sse-connect="/api/generate/batch/{batch_id}/events" sse-close="batch"'
    assert events in browser.get(f"/batches/{batch_id}").get_data(True)
    drain(app)
    finished = browser.get(f"/batches/{batch_id}").get_data(True)
    assert 'id="batch-live"' in finished and "sse-connect" not in finished
