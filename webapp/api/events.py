"""GET /api/generate/batch/<id>/events: a batch's progress as server-sent events.

Events, each with an `id:` (docs/api.md, "Events"):

    generation  id <version>.<position>  an image's entry of `results`, as the status answer has it
    summary     id <version>             the counts, once everything up to that version is sent
    batch       id <version>.end         the batch is finished (its own fields); the stream ends

and a comment (": keep-alive") every EVENTS_KEEPALIVE_SECONDS. The events are derived from the
database (the change counter, webapp/versions.py), not from memory: a stream sends what changed
after its cursor, so a reconnect with `Last-Event-ID` (or `?lastEventId=`) gets exactly what it
missed. Ids order as (version, kind, position): an image's change, then the summary of its
version, then the end. An image changed twice between two reads is sent once, as it is now,
and reads are EVENTS_COALESCE_SECONDS apart: at most one event per image per that time.
A finished batch asked from past its end answers 204, which tells an EventSource to stop.
"""

import bisect
import json
import re
import time

from flask import Response, current_app, request, stream_with_context
from flask_login import current_user, login_required

from ..errors import json_error
from ..extensions import db
from ..generation import presenters
from ..generation.ownership import owned_batch
from ..storage.views import url_signer
from .event_hub import hub_of

EVENT_ID = re.compile(r"^(\d{1,18})(?:\.(\d{1,9}|end))?$")
# Cursor kinds: how events of one version order (an image's, the summary, the end).
IMAGE, SUMMARY, END = 0, 1, 2
BEFORE_ALL = (-1, 0, 0)
# A rendered entry (with its signed link) is shared by the streams of one host this long.
RENDER_SECONDS = 60.0


def parse_event_id(value):
    """The cursor (version, kind, position) of an event id, BEFORE_ALL for none, or None when
    it is not one of ours."""
    if not value:
        return BEFORE_ALL
    match = EVENT_ID.match(value.strip())
    if match is None:
        return None
    version, rest = int(match.group(1)), match.group(2)
    if rest is None:
        return (version, SUMMARY, 0)
    if rest == "end":
        return (version, END, 0)
    return (version, IMAGE, int(rest))


def batch_events(batch_id):
    """The stream; 404 for a batch that is not the caller's, 400 for a malformed event id."""
    if owned_batch(batch_id, current_user.id) is None:
        return json_error("Batch not found", 404)
    given = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
    cursor = parse_event_id(given)
    if cursor is None:
        return json_error(
            "Last-Event-ID is not an id of this stream (<version>, <version>.<position> or "
            "<version>.end)",
            400,
            field="lastEventId",
        )
    # The stream holds no connection while it waits, nor while it joins: the first stream of
    # a batch reads its snapshot on a connection of the hub's, and the others wait for it.
    db.session.close()
    hub = hub_of(current_app)
    watch = hub.join(batch_id)
    snapshot = watch.snapshot
    if snapshot.finished and cursor >= (snapshot.version, END, 0):
        hub.leave(watch)
        return Response(status=204)
    keepalive = current_app.config["EVENTS_KEEPALIVE_SECONDS"]
    stream = _stream(hub, watch, cursor, keepalive)
    return Response(
        stream_with_context(stream),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _stream(hub, watch, cursor, keepalive):
    shown = None
    renderer = _Renderer(watch)
    try:
        while True:
            with watch.changed:
                if watch.snapshot is shown:
                    watch.changed.wait(timeout=keepalive)
                snapshot = watch.snapshot
            if snapshot is shown:
                yield ": keep-alive\n\n"
                continue
            shown = snapshot
            chunks = []
            # The rows are ordered as their ids: start at the first past the cursor, not at
            # the batch's first (a thousand streams of one worker each scanned every row).
            start = bisect.bisect_right(snapshot.ordered, cursor, key=_image_key)
            for row in snapshot.ordered[start:]:
                entry = renderer(row, snapshot.ahead)
                chunks.append(_event("generation", f"{row.version}.{row.position}", entry))
                cursor = _image_key(row)
            if (snapshot.version, SUMMARY, 0) > cursor:
                chunks.append(_event("summary", str(snapshot.version), _json(snapshot.summary)))
                cursor = (snapshot.version, SUMMARY, 0)
            if snapshot.finished:
                chunks.append(_event("batch", f"{snapshot.version}.end", _json(snapshot.batch)))
                yield "".join(chunks)
                return
            if chunks:
                yield "".join(chunks)
    finally:
        hub.leave(watch)


def _image_key(row):
    return (row.version, IMAGE, row.position)


class _Renderer:
    """An image's entry as JSON text, rendered once per version and link root in the process
    (shared by that batch's streams), its signed link made for the viewer's host."""

    def __init__(self, watch):
        self.watch = watch
        self.root = request.host_url
        self.signer = None
        self.signer_made = 0.0

    def __call__(self, row, ahead):
        now = time.monotonic()
        key = (self.root, row.id)
        found = self.watch.rendered.get(key)
        if found and found[0] == row.version and now - found[1] < RENDER_SECONDS:
            return found[2]
        if self.signer is None or now - self.signer_made >= RENDER_SECONDS:
            self.signer, self.signer_made = url_signer(), now
        text = _json(presenters.generation_result(row, self.signer, ahead))
        self.watch.rendered[key] = (row.version, now, text)
        return text


def _json(data):
    return json.dumps(data, separators=(",", ":"))


def _event(name, event_id, data):
    return f"event: {name}\nid: {event_id}\ndata: {data}\n\n"


def init_app(bp):
    bp.add_url_rule("/generate/batch/<batch_id>/events", view_func=login_required(batch_events))
