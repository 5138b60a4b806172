"""When a batch will be done: its `eta`, from what images of its model took lately, its
concurrency, the images that start before each of its waiting ones (places.py) and the pacer.

    latency      what the model's last SAMPLES successes on the batch's engine took, claim to
                 result (an index on model and finished_at makes it one short read)
    the batch    at most `concurrency` images at once, each slot filled at the median: an
                 image in flight takes what the samples longer than its time so far have left,
                 a waiting one starts when a slot is free, the slot's gap after it (the
                 doorbell and the next claim, seen in the batch's own starts and ends)
    the pacer    a paced engine (kie.ai) starts at most UPSTREAM_RATE_LIMIT images in any
                 window of UPSTREAM_RATE_PERIOD (plus its margin): the slots taken in the
                 current window are the images started in it, so the n-th image to start from
                 now can go no sooner than the window lets it; a waiting image of the batch is
                 the (images ahead of it + 1)-th, under the shares
    the eta      when the last of the batch's images is expected to end (the slowest of the
                 last image of each slot, over the samples' spread): seconds from now, and the
                 time that is

None while nothing is known (no image of that model has succeeded yet on that engine), once
the batch is finished, and while it is held (paused, or awaiting approval): nothing runs then.
It is the one estimate: the batch page shows it too. It is recomputed at every answer, so it
counts down as images run, and it follows the model's pace as the batch's own images finish
(they are the model's most recent).
"""

import bisect
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


@dataclass(frozen=True)
class Latency:
    """What the model's recent images took (seconds, claim to result): their median paces the
    batch; the spread of them tells when the last of several running at once ends."""

    samples: tuple

    @classmethod
    def of(cls, value):
        return value if isinstance(value, cls) else cls((float(value),))

    @property
    def median(self):
        return statistics.median(self.samples)

    def left_after(self, ran):
        """What an image that has run `ran` seconds can expect to take still: the mean of
        what the samples longer than that have left (0 when none was that long)."""
        longer = [took - ran for took in self.samples if took > ran]
        return statistics.fmean(longer) if longer else 0.0

    def last_end(self, jobs):
        """The expected time the last of these jobs ends: each (starts at, has run for) —
        a job in flight has run for some seconds and takes what is left of a duration longer
        than that. Each takes one of the samples, independently: the end of the slowest of
        them, exactly for the samples' distribution (a step function, integrated)."""
        supports = []
        for starts_at, ran in jobs:
            if ran is None:
                supports.append(sorted(starts_at + took for took in self.samples))
            else:
                supports.append(sorted(took - ran for took in self.samples if took > ran) or [0.0])
        if not supports:
            return 0.0

        def all_done_by(moment):
            chance = 1.0
            for support in supports:
                chance *= bisect.bisect_right(support, moment) / len(support)
            return chance

        expected, previous, done = 0.0, 0.0, all_done_by(0.0)
        for moment in sorted({max(point, 0.0) for support in supports for point in support}):
            expected += (1.0 - done) * (moment - previous)
            previous, done = moment, all_done_by(moment)
        return expected


def slot_gap(starts, finishes, concurrency):
    """Seconds a slot of the batch stays empty after an image ends: the queue's doorbell and
    the next claim. The k-th start (0-based) past the first `concurrency` waited for the
    (k − concurrency)-th end; the lower quartile of those waits, so that starts the pacer held
    back say little. 0 until one was seen."""
    starts, finishes = sorted(starts), sorted(finishes)
    waits = [
        (starts[k] - finishes[k - concurrency]).total_seconds()
        for k in range(concurrency, len(starts))
        if k - concurrency < len(finishes) and starts[k] >= finishes[k - concurrency]
    ]
    if not waits:
        return 0.0
    return statistics.quantiles(waits, n=4, method="inclusive")[0] if len(waits) > 1 else waits[0]


def seconds_left(latency, concurrency, running_for, aheads, window=None, gap=0.0):
    """Seconds until the last of a batch's images ends.

    `latency`: a Latency (or seconds); `running_for`: how long each image in flight has run;
    `aheads`: for each waiting image, in the order they start, how many images (of any batch)
    start before it; `window`: the pacer's Window, None for an unpaced engine; `gap`: how long
    a slot stays empty between two images (slot_gap). The slots are filled at the median; the
    last image of each slot ends as Latency.last_end expects.
    """
    latency = Latency.of(latency)
    median = latency.median
    last = [(0.0, ran) for ran in running_for]  # each slot's last image: (starts at, has run)
    slots = [(latency.left_after(ran) + gap, slot) for slot, ran in enumerate(running_for)]
    slots += [(0.0, slot) for slot in range(len(slots), concurrency)]
    last += [None] * (len(slots) - len(last))
    heapq.heapify(slots)
    starts = window.start_times(max(aheads) + 1) if window and aheads else None
    for ahead in aheads:
        start, slot = heapq.heappop(slots)
        if starts is not None:
            start = max(start, starts[ahead])
        last[slot] = (start, None)
        heapq.heappush(slots, (start + median + gap, slot))
    return latency.last_end([job for job in last if job is not None])


def recent_latencies(pairs):
    """{(engine, model): Latency of its last SAMPLES successes, or None}: one query per pair
    (an answer names one model, a page of batches a few)."""
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
        took = tuple(max((end - start).total_seconds(), 0.0) for start, end in rows)
        found[engine, model] = Latency(took) if took else None
    return found


def pacer_window(engine, now):
    """The Window of `engine` if it is paced (the app's engine, with pacing on), else None."""
    config = current_app.config
    try:
        provider = get_provider()
    except KeyError:  # an app built without an engine: nothing is paced
        return None
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


# The images of a batch that started: in flight, or ended after running.
STARTED = (GenerationStatus.PROCESSING, GenerationStatus.SUCCESS, GenerationStatus.FAILED)


def started_images(batch_ids):
    """{batch id: [(status, started_at, finished_at)] of its images that started}, one query."""
    found = {batch_id: [] for batch_id in batch_ids}
    if found:
        rows = db.session.execute(
            select(
                Generation.batch_id,
                Generation.status,
                Generation.started_at,
                Generation.finished_at,
            ).where(Generation.batch_id.in_(list(found)), Generation.status.in_(STARTED))
        )
        for batch_id, *times in rows:
            found[batch_id].append(tuple(times))
    return found


def times_of(generations):
    """started_images' answer for one batch's images, from the rows the caller holds."""
    return [(g.status, g.started_at, g.finished_at) for g in generations if g.status in STARTED]


def estimates(batches, queue, now, started=None):
    """{batch id: Eta or None} for these batches.

    `queue` is a callable answering places.Queue (asked only if a batch is unfinished);
    `started` is started_images' answer when the caller has the images already.
    """
    found = {batch.id: None for batch in batches}
    live = [batch for batch in batches if batch.status in BatchStatus.ACTIVE]
    if not live:
        return found
    latencies = recent_latencies((batch.provider, batch.model) for batch in live)
    known = [batch for batch in live if latencies[batch.provider, batch.model] is not None]
    if not known:
        return found
    snapshot = queue()
    if started is None:
        started = started_images([batch.id for batch in known])
    windows = {}
    for batch in known:
        if batch.provider not in windows:
            windows[batch.provider] = pacer_window(batch.provider, now)
        waiting = snapshot.batches.get(batch.id)
        pending = waiting.pending if waiting else 0
        times = [row for row in started.get(batch.id, ()) if row[1] is not None]
        running = [(now - begun).total_seconds() for status, begun, _ in times
                   if status == GenerationStatus.PROCESSING]
        ended = [end for status, _, end in times if status != GenerationStatus.PROCESSING and end]
        seconds = seconds_left(
            latencies[batch.provider, batch.model],
            batch.concurrency,
            [max(ran, 0.0) for ran in running],
            [snapshot.ahead(batch.id, rank).total for rank in range(pending)],
            windows[batch.provider],
            slot_gap([begun for _, begun, _ in times], ended, batch.concurrency),
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
    ahead = reasons.images_ahead(generations, queue, whole=True)  # every image of the batch
    expected = estimates([batch], queue, now, {batch.id: times_of(generations)})[batch.id]
    places = {key: (found.total + 1, reasons.place_words(found)) for key, found in ahead.items()}
    return Outlook(expected, places)
