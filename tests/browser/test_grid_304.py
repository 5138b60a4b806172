"""The live grid's conditional poll in Chromium (static/grid.js, docs/api.md "Polling"): while
nothing changes, every poll of the grid carries If-None-Match, is answered 304 and leaves the
grid's DOM as it is (the very same nodes); after a change the next poll is a 200 that swaps.

The page prefers the batch's event stream and holds its poll back while that is open
(test_grid_events.py); here the stream cannot connect, so the grid polls, as it does then."""

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


# What made each of the grid's GETs (its triggering event, "poll" for htmx's timer), as htmx
# is about to send it, and how often the page's event stream opened.
RECORDER = """
window.gridAsked = [];
window.streamOpened = 0;
document.addEventListener("htmx:beforeRequest", (event) => {
    const config = event.detail.requestConfig;
    if (config.elt.id === "batch-grid") {
        gridAsked.push(config.triggeringEvent ? config.triggeringEvent.type : "poll");
    }
});
document.addEventListener("htmx:sseOpen", () => { streamOpened += 1; });
"""


class BatchPage:
    """A 3-image sequential batch, paused with nothing running (a held batch's tag has no
    clock, so nothing in its grid moves), and its page open in Chromium, watched: the grid's
    polls (GridPolls), each request for the events route (`streams`), the console's errors.
    `route_events`: a playwright route handler for the events route (None: the real one)."""

    def __init__(self, browser, app, base_url, name, route_events=None):
        user_id, token = create_user(app, name, credits=100)
        self.batch_id, _ = create_batch_jobs(ApiClient(app, user_id, token), 3, concurrency=1)
        pause(app, self.batch_id)
        settle(app, self.batch_id)
        self.page = page = browser.new_page(viewport={"width": 1100, "height": 900})
        self.errors = console_errors(page)
        sign_in_with_a_link(page, app, base_url, user_id)
        page.add_init_script(RECORDER)
        self.events_url = f"{base_url}/api/generate/batch/{self.batch_id}/events"
        self.streams = []
        page.on("request", self._requested)
        if route_events:
            page.route(f"{self.events_url}*", route_events)
        self.polls = GridPolls(page, self.batch_id)
        page.goto(f"{base_url}/batches/{self.batch_id}")

    def _requested(self, request):
        if request.url.startswith(self.events_url):
            self.streams.append(time.monotonic())

    def grid_asked(self):
        return self.page.evaluate("window.gridAsked")


def test_an_unchanged_grid_polls_304_untouched_and_a_change_swaps_within_one_poll(
    chromium,  # noqa: F811
    live_server,  # noqa: F811
):
    app, base_url = live_server
    opened = BatchPage(chromium, app, base_url, "ines", route_events=lambda route: route.abort())
    page, batch_id, polls, errors = opened.page, opened.batch_id, opened.polls, opened.errors
    mark_grid(page)
    tag = page.get_attribute("#batch-grid", "data-etag")  # the page's grid holds its tag
    assert tag and tag.startswith('W/"')

    page.wait_for_timeout(3 * POLL_SECONDS * 1000 + 500)
    unchanged = polls.seen
    assert len(unchanged) >= 3, unchanged
    # From the first poll on: the page's tag sent, 304 answered, naming the tag it matched.
    assert [poll[1:] for poll in unchanged] == [(304, tag, tag)] * len(unchanged)
    assert page.evaluate(UNTOUCHED)
    assert set(opened.grid_asked()) == {"poll"} and opened.streams
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
    # htmx logs each refused stream (htmx:sseError, its Event as text), and nothing else is logged.
    assert all(e.startswith("[object Event] @") and "/htmx-" in e for e in errors), errors
    page.close()
