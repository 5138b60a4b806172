"""The queue: the task functions Huey runs, and the doorbell the services ring (`Queue`).

Tasks carry ids only and are idempotent: the database decides what a task may do, so a
duplicate or late delivery claims nothing and changes nothing. The functions below are declared
once, with their Huey policy, and every app's Huey registers them (tasks/consumer.py runs them in
the app's context). This package sits below the HTTP layer and above the services: it imports
webapp.generation, the providers and the storage, never webapp.api or webapp.web.
"""

import logging
from dataclasses import dataclass
from datetime import UTC

from flask import current_app
from huey.signals import SIGNAL_INTERRUPTED

from webapp import logs, pacing
from webapp.generation import announcements, claims, deliveries, reaper, steps
from webapp.providers import get_provider
from webapp.storage import get_storage

from .consumer import EmbeddedConsumer, create_huey

__all__ = ["EmbeddedConsumer", "Queue", "get_queue", "init_app"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Declared:
    """A task function and how a Huey registers it (`task` or `periodic_task`, with options)."""

    function: object
    decorator: str
    args: tuple
    options: dict

    def register(self, huey):
        return getattr(huey, self.decorator)(*self.args, **self.options)(self.function)


DECLARED = []


def task(**options):
    """Declare a task function with its Huey policy (retries=, retry_delay=)."""
    return _declare("task", (), options)


def periodic_task(validate_datetime, **options):
    """Declare a periodic task function, run when `validate_datetime(now)` says so."""
    return _declare("periodic_task", (validate_datetime,), options)


def _declare(decorator, args, options):
    def declare(function):
        DECLARED.append(Declared(function, decorator, args, options))
        return function

    return declare


@task(retries=2, retry_delay=5)
def run_lane(batch_id):
    """One turn of a batch's lane; it re-rings itself while there is work."""
    queue = get_queue(current_app)
    with logs.bound(batch_id=batch_id):
        step = steps.lane_step(batch_id, get_provider(), get_storage(), queue.settings)
        queue.follow_up(step, queue.run_lane, (batch_id,))


@task(retries=2, retry_delay=5)
def run_photo(generation_id):
    """Work on one single-photo generation."""
    queue = get_queue(current_app)
    with logs.bound(generation_id=generation_id):
        step = steps.photo_step(generation_id, get_provider(), get_storage(), queue.settings)
        queue.follow_up(step, queue.run_photo, (generation_id,))


@task(retries=2, retry_delay=5)
def poll_generation(generation_id, round_number=0, follow_up=True):
    """Ask an async provider whether a submitted generation is done. A poll rung by a callback
    does not follow up: the scheduled chain of polls goes on beside it."""
    queue = get_queue(current_app)
    with logs.bound(generation_id=generation_id):
        step = steps.poll_step(generation_id, get_provider(), get_storage(), queue.settings)
        if step.poll_generation:
            if follow_up:
                queue.poll_later(generation_id, round_number + 1)
        elif step.ring_batch:
            queue.run_lane(step.ring_batch)


@task(retries=2, retry_delay=5)
def deliver_webhook(delivery_id):
    """One attempt at a webhook delivery; a retry is scheduled at its time on the schedule."""
    with logs.bound(delivery_id=delivery_id):
        sent = deliveries.deliver(delivery_id)
    if sent is not None and sent.next_at is not None:
        queue = get_queue(current_app)
        queue.deliver_webhook.schedule(args=(delivery_id,), eta=sent.next_at.replace(tzinfo=UTC))


@periodic_task(lambda now: True, name="reap")
def reap_periodically():
    """Every REAP_SECONDS: recover what stalled and sweep (see webapp.generation.reaper).

    Consumers that all run periodic tasks take turns, so the reaper runs about once per
    interval in all however many there are.
    """
    queue = get_queue(current_app)
    if queue.reaper_turn().acquire():
        return None  # another consumer has reaped within this interval
    return queue.reap()


def hand_back_interrupted(signal, task, *args, **kwargs):
    """The consumer is stopping mid-task (SIGTERM, or a graceful stop that timed out): give the
    attempts back and ring the task again, so another consumer takes over now rather than when
    the leases expire."""
    released = steps.release_held_claims()
    if released:
        log.warning("handed back %d interrupted generation(s)", len(released))
    get_queue(current_app).huey.enqueue(task)


class Queue:
    """One app's Huey with every declared task registered on it, and the calls that ring them.

    The services take it as their doorbell (`start_batch`, `start_photo`, `poll_now`): a
    create commits its rows first, so a doorbell that fails only delays the work.
    """

    def __init__(self, app, huey):
        self.app = app
        self.huey = huey
        self.settings = claims.Settings.from_config(app.config)
        for declared in DECLARED:
            setattr(self, declared.function.__name__, declared.register(huey))
        huey.signal(SIGNAL_INTERRUPTED)(hand_back_interrupted)
        announcements.set_doorbell(app, self.deliver_webhooks)

    def reaper_turn(self):
        period = self.app.config["REAP_SECONDS"] * 0.8
        return pacing.pacer_for(self.app, "reaper", limit=1, period=period)

    def follow_up(self, step, task, args):
        """Ring what a step asks for: a poll, the same task again now, or later at its wake."""
        if step.poll_generation:
            self.poll_later(step.poll_generation, 0)
        if step.worked:
            task(*args)
        elif step.wake_at:
            # Aware, so Huey does not read it as local time (and drop its microseconds).
            task.schedule(args=args, eta=step.wake_at.replace(tzinfo=UTC))

    def poll_later(self, generation_id, round_number):
        delays = self.app.config["POLL_DELAYS"]
        delay = delays[min(round_number, len(delays) - 1)]
        self.poll_generation.schedule(args=(generation_id, round_number), delay=delay)

    def poll_now(self, generation_id):
        """One poll at once, beside the scheduled ones (the upstream said it is done)."""
        self.poll_generation(generation_id, follow_up=False)

    def start_batch(self, batch_id, concurrency, images):
        """Ring one lane per image allowed in flight; if the queue is down, the reaper starts
        the batch later."""
        try:
            for _ in range(min(concurrency, images)):
                self.run_lane(batch_id)
        except Exception:
            log.exception("could not enqueue batch %s; the reaper will start it", batch_id)

    def start_photo(self, generation_id):
        """Ring a new photo generation; if the queue is down, the reaper starts it later."""
        try:
            self.run_photo(generation_id)
        except Exception:
            log.exception("could not enqueue photo %s; the reaper will start it", generation_id)

    def deliver_webhooks(self, delivery_ids):
        """Ring webhook deliveries just committed (the outbox); the reaper rings what is lost."""
        for delivery_id in delivery_ids:
            self.deliver_webhook(delivery_id)

    def reap(self):
        """Run the reaper once and ring what it found; answers its report."""
        config = self.app.config
        with self.app.app_context():
            report = reaper.reap(self.settings, config["STALL_SECONDS"], get_storage())
        for batch_id, lanes in report.lanes.items():
            for _ in range(lanes):
                self.run_lane(batch_id)
        for generation_id in report.photos:
            self.run_photo(generation_id)
        for generation_id in report.polls:
            self.poll_later(generation_id, 0)
        self.deliver_webhooks(report.webhooks)
        if report.requeued or report.failed or report.lanes or report.photos or report.polls:
            log.warning("reaper: %s", report.summary())
        return report


def init_app(app):
    app.extensions["batchgen.queue"] = Queue(app, create_huey(app))


def get_queue(app):
    return app.extensions["batchgen.queue"]
