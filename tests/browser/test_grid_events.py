"""The batch page on its event stream in Chromium (show.html, static/grid.js, htmx's SSE
extension): while the stream is open the grid's 2 s poll is held back (but for a check when it
is silent a while) and each summary has the grid fetch itself (the same conditional GET, the
same fragment); a finished grid neither polls nor streams; while the events route cannot be
reached the page polls every 2 s, and once the stream connects again the polls stop."""

import time

import pytest

from tests.browser.test_grid_304 import (
    POLL_SECONDS,
    UNTOUCHED,
    BatchPage,
    mark_grid,
    resume,
)
from tests.browser.test_live_grid import (  # noqa: F401  (the fixtures are used by name)
    chromium,
    live_server,
)

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


def test_a_page_on_the_stream_does_not_poll_and_updates_from_its_events(
    chromium,  # noqa: F811
    live_server,  # noqa: F811
):
    app, base_url = live_server
    opened = BatchPage(chromium, app, base_url, "sol")
    page, batch_id, polls = opened.page, opened.batch_id, opened.polls
    page.wait_for_function("() => window.streamOpened === 1", timeout=10000)
    events = f"/api/generate/batch/{batch_id}/events"
    assert page.get_attribute("#batch-live", "sse-connect") == events
    # The stream's first events (the batch as it is) ask the grid once: nothing changed, a 304.
    page.wait_for_timeout(1000)
    assert opened.grid_asked() == ["sse:summary"]
    assert [poll[1] for poll in polls.seen] == [304]

    mark_grid(page)
    quiet = time.monotonic()
    page.wait_for_timeout(3 * POLL_SECONDS * 1000)
    assert polls.since(quiet) == []  # no poll while the stream is open, no event: nothing moved
    assert opened.grid_asked() == ["sse:summary"]
    assert page.evaluate(UNTOUCHED)

    # Silent longer than its check interval (30 s, here 3 s), the stream lets one poll through
    # each interval: a stream a proxy holds back cannot freeze the grid. Nothing moved: 304s.
    page.eval_on_selector("#batch-live", "live => { live.dataset.streamCheck = '3'; }")
    checking = time.monotonic()
    page.wait_for_timeout(7500)
    checks = polls.since(checking)
    assert [poll[1] for poll in checks] == [304, 304], checks
    assert checks[1][0] - checks[0][0] >= 3
    assert opened.grid_asked() == ["sse:summary", "poll", "poll"]
    page.eval_on_selector("#batch-live", "live => { live.dataset.streamCheck = '30'; }")
    assert page.evaluate(UNTOUCHED)

    changed = time.monotonic()
    resume(app, batch_id)
    page.wait_for_selector("#batch-grid:not([data-status=paused])", timeout=5000)
    moved = time.monotonic() - changed
    assert not page.evaluate(UNTOUCHED)
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=30000)
    assert page.locator(".tile-success").count() == 3
    asked = opened.grid_asked()[3:]  # after the checks
    assert "poll" not in asked and asked[-1] in ("sse:summary", "sse:batch"), asked
    assert {poll[1] for poll in polls.since(changed)} <= {200, 304}

    # Finished: the stream closed at its batch event, and nothing polls or streams any more.
    done = time.monotonic()
    page.wait_for_timeout(POLL_SECONDS * 1000 + 1000)
    assert polls.since(done) == [] and [t for t in opened.streams if t >= done] == []
    assert len(opened.streams) == 1 and page.evaluate("window.streamOpened") == 1
    # From the stream (the commit, the hub's check every 0.5 s, the GET): about 1 s here; the
    # bound leaves a loaded machine room. That no poll asked it is told above.
    assert moved < 2.5, moved
    assert opened.errors == []
    page.close()


def test_while_the_events_route_is_unreachable_the_page_polls_and_then_streams_again(
    chromium,  # noqa: F811
    live_server,  # noqa: F811
):
    app, base_url = live_server
    refused = []
    down_until = [float("inf")]

    def unreachable_for_a_while(route):
        if time.monotonic() < down_until[0]:
            refused.append(time.monotonic())
            route.fulfill(status=503, content_type="application/json", body='{"error": "down"}')
        else:
            route.continue_()

    opened = BatchPage(chromium, app, base_url, "tom", route_events=unreachable_for_a_while)
    page, batch_id, polls = opened.page, opened.batch_id, opened.polls
    mark_grid(page)
    tag = page.get_attribute("#batch-grid", "data-etag")
    page.wait_for_timeout(2 * POLL_SECONDS * 1000 + 500)
    assert refused  # it tried the stream, and tries again further apart each time
    down = polls.seen
    assert len(down) >= 2, down
    assert [poll[1:] for poll in down] == [(304, tag, tag)] * len(down)
    assert set(opened.grid_asked()) == {"poll"}
    assert page.evaluate(UNTOUCHED)

    down_until[0] = time.monotonic()  # the route is back: the extension's next try gets through
    page.wait_for_function("() => window.streamOpened === 1", timeout=20000)
    page.wait_for_timeout(1000)  # its first events ask the grid once (a 304)
    back = time.monotonic()
    page.wait_for_timeout(2 * POLL_SECONDS * 1000 + 500)
    assert polls.since(back) == []  # the stream is open: the poll is held back again
    assert page.evaluate(UNTOUCHED)

    resume(app, batch_id)
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=30000)
    asked = opened.grid_asked()
    opened_at = asked.index("sse:summary")
    assert set(asked[:opened_at]) == {"poll"} and "poll" not in asked[opened_at:], asked
    # htmx logs each refused stream (htmx:sseError, its Event as text), and nothing else is logged.
    errors = opened.errors
    assert len(errors) >= len(refused) - 1  # the last refusal's may still be on its way
    assert all(e.startswith("[object Event] @") and "/htmx-" in e for e in errors), errors
    page.close()


# The tab hidden or shown, as switching tabs does (headless Chromium's tabs are all visible).
SHOWN = """hidden => {
    Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
    document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_hidden_tab_closes_its_stream_and_polls_and_streams_again_when_shown(
    chromium,  # noqa: F811
    live_server,  # noqa: F811
):
    app, base_url = live_server
    opened = BatchPage(chromium, app, base_url, "uma")
    page, batch_id, polls = opened.page, opened.batch_id, opened.polls
    ended = []
    page.on("requestfailed", lambda r: ended.append(r.url) if "/events" in r.url else None)
    page.wait_for_function("() => window.streamOpened === 1", timeout=10000)
    page.wait_for_timeout(1000)  # its first events ask the grid once (a 304)
    mark_grid(page)

    page.evaluate(SHOWN, True)
    hidden = time.monotonic()
    page.wait_for_timeout(2 * POLL_SECONDS * 1000 + 500)
    assert ended == [opened.events_url]  # the hidden tab gave its connection back
    away = polls.since(hidden)
    assert len(away) >= 2 and {poll[1] for poll in away} == {304}, away
    assert page.evaluate(UNTOUCHED)

    page.evaluate(SHOWN, False)
    page.wait_for_function("() => window.streamOpened === 2", timeout=5000)
    page.wait_for_timeout(1000)  # the new stream's first events ask the grid once (a 304)
    back = time.monotonic()
    page.wait_for_timeout(2 * POLL_SECONDS * 1000 + 500)
    assert polls.since(back) == []
    assert page.evaluate(UNTOUCHED) and len(opened.streams) == 2

    resume(app, batch_id)
    page.wait_for_selector("#batch-grid[data-status=completed]:not([hx-trigger])", timeout=30000)
    asked = opened.grid_asked()
    assert asked[-1] in ("sse:summary", "sse:batch"), asked
    # The polls of the hidden tab, and maybe one more before the new stream opened (its retry
    # waits 500 ms): none since.
    assert asked.count("poll") - len(away) in (0, 1), asked
    assert opened.errors == []
    page.close()
