"""The live grid's conditional poll in Chromium (static/grid.js, docs/api.md "Polling"): while
nothing changes, every poll of the grid carries If-None-Match, is answered 304 and leaves the
grid's DOM as it is (the very same nodes); after a change the next poll is a 200 that swaps."""

import time

import pytest

from tasks import get_queue
from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    chromium,
    console_errors,
    live_server,
    sign_in_with_a_link,
)
from tests.support import ApiClient, create_batch_jobs, create_user
from webapp.generation.pausing import pause_batch, resume_batch
from webapp.generation.progress import progress_of

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

POLL_SECONDS = 2  # the grid's hx-trigger, templates/batches/_grid.html


class GridPolls:
    """Every poll of the grid fragment the page sends, with what the network answered it."""

    def __init__(self, page, batch_id):
        self.path = f"/batches/{batch_id}"
        self.seen = []  # (time, status, If-None-Match sent, ETag answered)
        page.on("requestfinished", self._finished)

    def _finished(self, request):
        headers = request.all_headers()
        if not request.url.endswith(self.path) or "hx-request" not in headers:
            return
        response = request.response()
        self.seen.append(
            (
                time.monotonic(),
                response.status,
                headers.get("if-none-match"),
                response.all_headers().get("etag"),
            )
        )

    def since(self, moment):
        return [poll for poll in self.seen if poll[0] >= moment]


def pause(app, batch_id):
    """Pause the batch as its API route does (the service's own unit of work)."""
    with app.app_context():
        pause_batch(batch_id)


def resume(app, batch_id):
    with app.app_context():
        resume_batch(batch_id, get_queue(app))


def settle(app, batch_id):
    """Wait (at most 10 s) until no image of the batch is running."""
    for _ in range(100):
        with app.app_context():
            if not progress_of([batch_id])[batch_id].processing:
                return
        time.sleep(0.1)
    raise AssertionError("an image of the paused batch is still running")


def mark_grid(page):
    """Tag the grid and its first tile as JS objects: a swap would put new nodes in their place."""
    page.evaluate(
        """() => {
            const grid = document.getElementById('batch-grid');
            window.markedGrid = grid;
            window.markedTile = grid.querySelector('.tile');
        }"""
    )


UNTOUCHED = """() => {
    const grid = document.getElementById('batch-grid');
    return grid === window.markedGrid && grid.querySelector('.tile') === window.markedTile;
}"""


def test_an_unchanged_grid_polls_304_untouched_and_a_change_swaps_within_one_poll(
    chromium,  # noqa: F811
    live_server,  # noqa: F811
):
    app, base_url = live_server
    user_id, token = create_user(app, "ines", credits=100)
    client = ApiClient(app, user_id, token)
    batch_id, _ = create_batch_jobs(client, 3, concurrency=1)
    # Paused, the grid keeps polling and nothing in it moves (a held batch's tag has no clock)
    # once the image that may have started finishes.
    pause(app, batch_id)
    settle(app, batch_id)
    page = chromium.new_page(viewport={"width": 1100, "height": 900})
    errors = console_errors(page)
    sign_in_with_a_link(page, app, base_url, user_id)
    polls = GridPolls(page, batch_id)
    page.goto(f"{base_url}/batches/{batch_id}")
    mark_grid(page)
    tag = page.get_attribute("#batch-grid", "data-etag")  # the page's grid holds its tag
    assert tag and tag.startswith('W/"')

    page.wait_for_timeout(3 * POLL_SECONDS * 1000 + 500)
    unchanged = polls.seen
    assert len(unchanged) >= 3, unchanged
    # From the first poll on: the page's tag sent, 304 answered, naming the tag it matched.
    assert [poll[1:] for poll in unchanged] == [(304, tag, tag)] * len(unchanged)
    assert page.evaluate(UNTOUCHED)
    assert page.get_attribute("#batch-grid", "data-status") == "paused"

    changed = time.monotonic()
    resume(app, batch_id)
    page.wait_for_selector(
        "#batch-grid:not([data-status=paused])", timeout=POLL_SECONDS * 1000 + 1500
    )
    after = polls.since(changed)
    first = next(poll for poll in after if poll[1] == 200)
    # At most one 304 between: a poll already on its way when the change was made.
    assert [poll[1] for poll in after[: after.index(first)]] in ([], [304]), after
    assert first[2] == tag and first[3] != tag  # the old tag sent, a new one answered
    assert first[0] - changed <= POLL_SECONDS + 1  # the first poll sent after the change
    assert not page.evaluate(UNTOUCHED)

    page.wait_for_selector(
        "#batch-grid[data-status=completed]:not([hx-trigger])", timeout=30000
    )  # it runs to the end, and the finished grid stops polling
    assert page.locator(".tile-success").count() == 3
    assert errors == []
    page.close()
