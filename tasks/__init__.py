"""The Huey queue: its instance, the task functions, and how the web side rings it.

Tasks carry ids only and are idempotent: the database decides what a task may do, so a
duplicate or late delivery claims nothing and changes nothing. Huey keeps no results.
"""

import logging
from datetime import UTC

from huey import MemoryHuey, RedisHuey, SqliteHuey
from huey.consumer import Consumer, Scheduler
from huey.signals import SIGNAL_INTERRUPTED

from webapp import pacing
from webapp.generation import claims, engine, reaper
from webapp.providers import get_provider
from webapp.storage import get_storage

log = logging.getLogger(__name__)


class ReaperScheduler(Scheduler):
    """Huey's scheduler, checking periodic tasks every REAP_SECONDS instead of every minute."""

    def __init__(self, *args, periodic_seconds, **kwargs):
        super().__init__(*args, **kwargs)
        self.periodic_task_seconds = periodic_seconds


class BatchgenConsumer(Consumer):
    """The consumer `huey_consumer app.huey` runs: its scheduler rings the reaper every
    REAP_SECONDS (Huey's own cadence, once a minute, would let a crash stall work that long)."""

    scheduler_class = ReaperScheduler

    def _create_scheduler(self):
        return self.scheduler_class(
            huey=self.huey,
            stop_flag=self.stop_flag,
            interval=self.scheduler_interval,
            periodic=self.periodic,
            periodic_seconds=self.huey.reap_seconds,
        )


class EmbeddedConsumer(BatchgenConsumer):
    """A consumer that runs beside the web server in one process and leaves signals alone."""

    def _set_signal_handlers(self):
        pass


class _BatchgenHuey:
    """Makes `huey_consumer app.huey` build a BatchgenConsumer."""

    reap_seconds = 60

    def create_consumer(self, **options):
        return BatchgenConsumer(self, **options)


class BatchgenMemoryHuey(_BatchgenHuey, MemoryHuey):
    pass


class BatchgenRedisHuey(_BatchgenHuey, RedisHuey):
    pass


class BatchgenSqliteHuey(_BatchgenHuey, SqliteHuey):
    pass


def create_huey(config):
    """A Huey on Redis when REDIS_URL is set, else on a SQLite file under instance/."""
    name = config["HUEY_NAME"]
    options = {"results": False, "utc": True}
    if config.get("HUEY_MEMORY"):
        huey = BatchgenMemoryHuey(name, **options)
    elif config["REDIS_URL"]:
        huey = BatchgenRedisHuey(name, url=config["REDIS_URL"], **options)
    else:
        huey = BatchgenSqliteHuey(name, filename=config["HUEY_SQLITE_PATH"], **options)
    huey.reap_seconds = config["REAP_SECONDS"]
    return huey


class Queue:
    """The app's tasks on its Huey instance, and the calls that ring them."""

    def __init__(self, app, huey):
        self.app = app
        self.huey = huey
        settings = claims.Settings.from_config(app.config)

        def context():
            return app.app_context()

        @huey.task(retries=2, retry_delay=5, name="run_lane")
        def run_lane(batch_id):
            """One turn of a batch's lane; it re-rings itself while there is work."""
            with context():
                step = engine.lane_step(batch_id, get_provider(), get_storage(), settings)
            self._follow_up(step, lambda: run_lane(batch_id), run_lane.schedule, (batch_id,))

        @huey.task(retries=2, retry_delay=5, name="run_photo")
        def run_photo(generation_id):
            """Work on one single-photo generation."""
            with context():
                step = engine.photo_step(generation_id, get_provider(), get_storage(), settings)
            self._follow_up(
                step, lambda: run_photo(generation_id), run_photo.schedule, (generation_id,)
            )

        @huey.task(retries=2, retry_delay=5, name="poll_generation")
        def poll_generation(generation_id, round_number=0, follow_up=True):
            """Ask an async engine whether a submitted generation is done. A poll rung by a
            callback does not follow up: the scheduled chain of polls goes on beside it."""
            with context():
                step = engine.poll_step(generation_id, get_provider(), get_storage(), settings)
            if step.poll_generation:
                if follow_up:
                    self.poll_later(generation_id, round_number + 1)
            elif step.ring_batch:
                run_lane(step.ring_batch)

        @huey.periodic_task(lambda now: True, name="reap")
        def reap_periodically():
            """Every REAP_SECONDS: recover what stalled (see webapp.generation.reaper).

            Consumers that all run periodic tasks take turns, so the reaper runs about once
            per interval in all however many there are.
            """
            if self._reaper_turn().acquire():
                return None  # another consumer has reaped within this interval
            return self.reap()

        @huey.signal(SIGNAL_INTERRUPTED)
        def hand_back_interrupted(signal, task, *args, **kwargs):
            """The consumer is stopping mid-task (SIGTERM, or a graceful stop that timed out):
            give the attempts back and ring the task again, so another consumer takes over
            now rather than when the leases expire."""
            with context():
                released = engine.release_held_claims()
            if released:
                log.warning("handed back %d interrupted generation(s)", len(released))
            huey.enqueue(task)

        self.run_lane = run_lane
        self.run_photo = run_photo
        self.poll_generation = poll_generation
        self.reap_periodically = reap_periodically

    def _reaper_turn(self):
        period = self.app.config["REAP_SECONDS"] * 0.8
        return pacing.pacer_for(self.app, "reaper", limit=1, period=period)

    def _follow_up(self, step, ring_again, schedule, args):
        if step.poll_generation:
            self.poll_later(step.poll_generation, 0)
        if step.worked:
            ring_again()
        elif step.wake_at:
            # Aware, so Huey does not read it as local time (and drop its microseconds).
            schedule(args=args, eta=step.wake_at.replace(tzinfo=UTC))

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

    def reap(self):
        """Run the reaper once and ring what it found; answers its report."""
        from webapp.api import idempotency  # the API imports this module: import it late

        app = self.app
        with app.app_context():
            report = reaper.reap(
                claims.Settings.from_config(app.config), app.config["STALL_SECONDS"]
            )
            report.partials = get_storage().sweep_partials()
            report.expired_keys = idempotency.purge_expired()
        for batch_id, lanes in report.lanes.items():
            for _ in range(lanes):
                self.run_lane(batch_id)
        for generation_id in report.photos:
            self.run_photo(generation_id)
        for generation_id in report.polls:
            self.poll_later(generation_id, 0)
        if report.requeued or report.failed or report.lanes or report.photos or report.polls:
            log.warning("reaper: %s", report.summary())
        return report


def init_app(app):
    app.extensions["batchgen.queue"] = Queue(app, create_huey(app.config))


def get_queue(app):
    return app.extensions["batchgen.queue"]
