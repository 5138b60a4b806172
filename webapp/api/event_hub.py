"""The web process's side of the event streams: one listener per process, one snapshot per
watched batch, fanned out to every stream of it (api/events.py).

A change is heard once per process (Redis pub/sub when REDIS_URL is set, webapp/fanout.py;
and a timer comparing the watched batches' versions, every EVENTS_CHECK_SECONDS without Redis
and every SAFETY_CHECK_SECONDS with it, for a notice that was lost), then read once per
batch (generation/live.py: one statement), at most once per EVENTS_COALESCE_SECONDS, into a
new Snapshot that every stream of the batch wakes to. A stream derives its events from the
snapshot and its own cursor (the last event id), so a thousand viewers of one batch cost one
read per change, and no stream holds a database connection while it waits: only the listener
reads, in an app context of its own, closed after each read.

The listener is a daemon thread, started by the first stream. Under gunicorn's gevent worker
(the web's serving model, docs/operations.md, Serving) the threads are greenlets and each open
stream is one too; under `make run` (Werkzeug's threads) each open stream holds a thread while
it waits.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from ..extensions import db
from ..fanout import channel, connect
from ..generation import live, presenters
from ..generation.feed import ANY

log = logging.getLogger(__name__)

_HUB = "batchgen.event_hub"
# With Redis, the versions are still compared this often: a notice lost costs no more.
SAFETY_CHECK_SECONDS = 10.0
REDIS_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Snapshot:
    """A batch as one read left it: every image's row (ordered by version, then position)."""

    version: int
    finished: bool
    images: dict  # generation id → row of live.IMAGE_COLUMNS
    ordered: tuple
    ahead: dict
    summary: dict
    batch: dict | None  # the `batch` event's data, once finished


@dataclass(eq=False)
class Watch:
    """One watched batch: its snapshot and the streams waiting on it."""

    batch_id: str
    snapshot: Snapshot | None = None
    viewers: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)
    loading: threading.Lock = field(default_factory=threading.Lock)
    refreshed_at: float = 0.0
    due_at: float | None = None
    rendered: dict = field(default_factory=dict)  # (link root, generation id) → (version, at, text)


def hub_of(app):
    """The app's hub, made at its first stream."""
    app = getattr(app, "_get_current_object", lambda: app)()  # the thread needs the app itself
    hub = app.extensions.get(_HUB)
    if hub is None:
        hub = app.extensions.setdefault(_HUB, Hub(app))
    return hub


class Hub:
    def __init__(self, app):
        config = app.config
        self.app = app
        self.redis = bool(config["REDIS_URL"])
        self.coalesce = config["EVENTS_COALESCE_SECONDS"]
        self.check_every = SAFETY_CHECK_SECONDS if self.redis else config["EVENTS_CHECK_SECONDS"]
        self.watches = {}
        self.lock = threading.Lock()
        self.heard = set()  # batch ids (or ANY) a notice named, not checked yet
        self.wake = threading.Event()
        self.thread = None
        self.reads = 0  # batched reads made (for tests and the benchmark)

    # The streams' side.

    def join(self, batch_id):
        """Watch a batch for one more stream; answers its Watch, with a snapshot (read now
        by the first stream of a batch the process was not watching)."""
        with self.lock:
            watch = self.watches.get(batch_id)
            if watch is None:
                watch = self.watches[batch_id] = Watch(batch_id)
            watch.viewers += 1
            self._start()
        if watch.snapshot is None:
            with watch.loading:
                if watch.snapshot is None:
                    self._refresh(watch)
        return watch

    def leave(self, watch):
        with self.lock:
            watch.viewers -= 1
            if watch.viewers <= 0 and self.watches.get(watch.batch_id) is watch:
                del self.watches[watch.batch_id]

    def hear(self, batch_ids):
        """A notice: these batches (or ANY) changed; the listener checks their versions."""
        with self.lock:
            self.heard.update(batch_ids)
        self.wake.set()

    # The listener.

    def _start(self):
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="event-hub", daemon=True)
            self.thread.start()
            if self.redis:
                hearing = threading.Thread(target=self._subscribe, name="event-hub-redis")
                hearing.daemon = True
                hearing.start()

    def _subscribe(self):
        """Hear the app's channel for as long as the process lives, reconnecting when Redis
        goes away (the timer covers the gap)."""
        name = channel(self.app.config)
        while True:
            try:
                pubsub = connect(self.app.config).pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(name)
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.hear([message["data"].decode()])
            except Exception:
                log.warning("event hub: Redis subscription lost; retrying", exc_info=True)
            time.sleep(REDIS_RETRY_SECONDS)

    def _run(self):
        next_check = time.monotonic() + self.check_every
        while True:
            now = time.monotonic()
            dues = [w.due_at for w in list(self.watches.values()) if w.due_at is not None]
            wait = min([next_check, *dues]) - now
            if wait > 0:
                self.wake.wait(wait)
            self.wake.clear()
            try:
                next_check = self._tick(next_check)
            except Exception:
                log.exception("event hub: a check failed; trying again")
                time.sleep(self.coalesce)

    def _tick(self, next_check):
        now = time.monotonic()
        with self.lock:
            heard, self.heard = self.heard, set()
            watches = dict(self.watches)
        if now >= next_check:
            heard.add(ANY)
            next_check = now + self.check_every
        to_check = list(watches) if ANY in heard else [b for b in heard if b in watches]
        to_check = [b for b in to_check if not _finished(watches[b])]
        if to_check:
            with self.app.app_context():
                versions = live.versions_of(to_check)
                db.session.close()
            for batch_id, version in versions.items():
                watch = watches[batch_id]
                if watch.snapshot is not None and version != watch.snapshot.version:
                    if watch.due_at is None:
                        watch.due_at = max(now, watch.refreshed_at + self.coalesce)
        for watch in watches.values():
            if watch.due_at is not None and watch.due_at <= time.monotonic():
                with watch.loading:
                    self._refresh(watch)
        return next_check

    def _refresh(self, watch):
        """One batched read of what changed since the snapshot; wake the streams."""
        old = watch.snapshot
        watch.due_at = None
        with self.app.app_context():
            try:
                changes = live.changed_since(watch.batch_id, old.version if old else 0)
                self.reads += 1
                if changes is None:
                    return
                images = dict(old.images) if old else {}
                images.update((row.id, row) for row in changes.images)
                rows = list(images.values())
                snapshot = Snapshot(
                    version=changes.version,
                    finished=changes.finished,
                    images=images,
                    ordered=tuple(sorted(rows, key=lambda row: (row.version, row.position))),
                    ahead=live.places_of(rows),
                    summary=presenters.summary(rows),
                    batch=live.batch_of(watch.batch_id) if changes.finished else None,
                )
            finally:
                db.session.close()
        watch.refreshed_at = time.monotonic()
        with watch.changed:
            watch.snapshot = snapshot
            watch.changed.notify_all()


def _finished(watch):
    return watch.snapshot is not None and watch.snapshot.finished
