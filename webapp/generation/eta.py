"""When a batch will be done: its `eta`, from what images of its model took lately, its
concurrency, the images that start before each of its waiting ones (places.py) and the pacer.

    latency      the median time, claim to result, of the model's last SAMPLES successes on
                 the batch's engine (an index on model and finished_at makes it one short read)
    the batch    at most `concurrency` images at once: an image in flight ends `latency` after
                 it started (now, if that is already past), a waiting one starts when a slot
                 of the batch is free
    the pacer    a paced engine (kie.ai) starts at most UPSTREAM_RATE_LIMIT images in any
                 window of UPSTREAM_RATE_PERIOD (plus its margin): the slots taken in the
                 current window are the images started in it, so the n-th image to start from
                 now can go no sooner than the window lets it; a waiting image of the batch is
                 the (images ahead of it + 1)-th, under the shares
    the eta      when the last of the batch's images is expected to end: seconds from now, and
                 the time that is

None while nothing is known (no image of that model has succeeded yet on that engine), once
the batch is finished, and while it is held (paused, or awaiting approval): nothing runs then.
It is the one estimate: the batch page shows it too. It is recomputed at every answer, so it
counts down as images run, and it follows the model's pace as the batch's own images finish
(they are the model's most recent).
"""

import functools
import heapq
import statistics
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select

from ..extensions import db
from ..models import BatchStatus, Generation, GenerationStatus
from ..pacing import window_seconds
from ..providers import get_provider
from . import reasons

# How many of a model's recent successes its median is taken over.
SAMPLES = 20
# Creates simulated one by one through the pacer's window; beyond, at its average rate.
MAX_SIMULATED_CREATES = 5000


@dataclass(frozen=True)
class Eta:
    seconds: int
    at: object  # naive UTC datetime, like every row's

    def to_json(self, timestamp):
        return {"seconds": self.seconds, "at": timestamp(self.at)}


@dataclass(frozen=True)
class Window:
    """A paced engine's limit: `limit` starts in any `seconds`; `taken` are how long ago
    (seconds) the slots of the current window were taken."""

    limit: int
    seconds: float
    taken: tuple = ()

    def start_times(self, count):
        """The earliest time from now (seconds) of each of the next `count` starts."""
        taken = sorted(-age for age in self.taken)[-self.limit :] if self.limit else []
        times, last = [], 0.0
        for _ in range(min(count, MAX_SIMULATED_CREATES)):
            if len(taken) >= self.limit:
                last = max(last, taken[-self.limit] + self.seconds)
            taken.append(last)
            times.append(last)
        rate = self.seconds / self.limit
        times += [last + rate * n for n in range(1, count - len(times) + 1)]
        return times


def seconds_left(latency, concurrency, running_for, aheads, window=None):
    """Seconds until the last of a batch's images ends.

    `running_for`: how long each image in flight has run; `aheads`: for each waiting image, in
    the order they start, how many images (of any batch) start before it; `window`: the pacer's
    Window, None for an unpaced engine.
    """
    slots = [max(latency - ran, 0.0) for ran in running_for]
    end = max(slots, default=0.0)
    slots += [0.0] * max(concurrency - len(slots), 0)
    heapq.heapify(slots)
    starts = window.start_times(max(aheads) + 1) if window and aheads else None
    for ahead in aheads:
        start = heapq.heappop(slots)
        if starts is not None:
            start = max(start, starts[ahead])
        heapq.heappush(slots, start + latency)
        end = max(end, start + latency)
    return end


def median_latencies(pairs):
    """{(engine, model): median seconds of its last SAMPLES successes, or None}: one query per
    pair (an answer names one model, a page of batches a few)."""
    found = {}
    for engine, model in set(pairs):
        rows = db.session.execute(
            select(Generation.started_at, Generation.finished_at)
            .where(
                Generation.model == model,
                Generation.finished_at.is_not(None),
                Generation.status == GenerationStatus.SUCCESS,
                Generation.provider == engine,
                Generation.started_at.is_not(None),
            )
            .order_by(Generation.finished_at.desc())
            .limit(SAMPLES)
        ).all()
        took = [max((end - start).total_seconds(), 0.0) for start, end in rows]
        found[engine, model] = statistics.median(took) if took else None
    return found


def pacer_window(engine, now):
    """The Window of `engine` if it is paced (the app's engine, with pacing on), else None."""
    config = current_app.config
    provider = get_provider()
    limit = config["UPSTREAM_RATE_LIMIT"]
    if not (provider.paced and provider.name == engine and limit > 0):
        return None
    seconds = window_seconds(config["UPSTREAM_RATE_PERIOD"])
    since = now - timedelta(seconds=seconds)
    taken = db.session.scalars(
        select(Generation.started_at)
        .where(
            Generation.started_at >= since,
            Generation.provider == engine,
            Generation.status != GenerationStatus.PENDING,
        )
        .order_by(Generation.started_at.desc())
        .limit(limit)
    ).all()
    return Window(limit, seconds, tuple((now - moment).total_seconds() for moment in taken))


def running_since(batch_ids):
    """{batch id: [started_at of each image in flight]}, in one query."""
    found = {batch_id: [] for batch_id in batch_ids}
    if found:
        rows = db.session.execute(
            select(Generation.batch_id, Generation.started_at).where(
                Generation.batch_id.in_(list(found)),
                Generation.status == GenerationStatus.PROCESSING,
            )
        )
        for batch_id, started_at in rows:
            found[batch_id].append(started_at)
    return found


def estimates(batches, queue, now, running=None):
    """{batch id: Eta or None} for these batches.

    `queue` is a callable answering places.Queue (asked only if a batch is unfinished);
    `running` is running_since's answer when the caller has the images already.
    """
    found = {batch.id: None for batch in batches}
    live = [batch for batch in batches if batch.status in BatchStatus.ACTIVE]
    if not live:
        return found
    latencies = median_latencies((batch.provider, batch.model) for batch in live)
    known = [batch for batch in live if latencies[batch.provider, batch.model] is not None]
    if not known:
        return found
    snapshot = queue()
    if running is None:
        running = running_since([batch.id for batch in known])
    windows = {}
    for batch in known:
        if batch.provider not in windows:
            windows[batch.provider] = pacer_window(batch.provider, now)
        waiting = snapshot.batches.get(batch.id)
        pending = waiting.pending if waiting else 0
        seconds = seconds_left(
            latencies[batch.provider, batch.model],
            batch.concurrency,
            [max((now - start).total_seconds(), 0.0) for start in running.get(batch.id, ())
             if start is not None],
            [snapshot.ahead(batch.id, rank).total for rank in range(pending)],
            windows[batch.provider],
        )
        whole = max(round(seconds), 1) if seconds > 0 else 0  # 0 only when nothing is left
        found[batch.id] = Eta(whole, now + timedelta(seconds=whole))
    return found


@dataclass(frozen=True)
class Outlook:
    """What the batch page shows of the queue: the eta, and each queued image's place."""

    eta: Eta | None
    places: dict  # generation id → (place, words), for the queued images


def outlook(batch, generations, now):
    """The batch page's Outlook, from the images it shows: the queue read once for both."""
    queue = functools.cache(reasons.default_queue)
    ahead = reasons.images_ahead(generations, queue)
    running = {batch.id: [g.started_at for g in generations
                          if g.status == GenerationStatus.PROCESSING]}
    expected = estimates([batch], queue, now, running)[batch.id]
    places = {key: (found.total + 1, reasons.place_words(found)) for key, found in ahead.items()}
    return Outlook(expected, places)
