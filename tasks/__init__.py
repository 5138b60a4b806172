"""The Huey queue: its instance, the task functions, and how the web side rings it.

Tasks carry ids only and are idempotent: the database decides what a task may do, so a
duplicate or late delivery claims nothing and changes nothing. Huey keeps no results.
"""

import logging

from huey import MemoryHuey, RedisHuey, SqliteHuey, crontab
from huey.consumer import Consumer

from webapp.generation import claims, engine, reaper
from webapp.providers import get_provider
from webapp.storage import get_storage

log = logging.getLogger(__name__)


def create_huey(config):
    """A Huey on Redis when REDIS_URL is set, else on a SQLite file under instance/."""
    name = config["HUEY_NAME"]
    if config.get("HUEY_MEMORY"):
        return MemoryHuey(name, results=False, utc=True)
    if config["REDIS_URL"]:
        return RedisHuey(name, url=config["REDIS_URL"], results=False, utc=True)
    return SqliteHuey(name, filename=config["HUEY_SQLITE_PATH"], results=False, utc=True)


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
        def poll_generation(generation_id, round_number=0):
            """Ask an async engine whether a submitted generation is done."""
            with context():
                step = engine.poll_step(generation_id, get_provider(), get_storage(), settings)
            if step.poll_generation:
                self.poll_later(generation_id, round_number + 1)
            elif step.ring_batch:
                run_lane(step.ring_batch)

        @huey.periodic_task(crontab(minute="*"), name="reap")
        def reap_periodically():
            """Every minute: recover what stalled (see webapp.generation.reaper)."""
            self.reap()

        self.run_lane = run_lane
        self.run_photo = run_photo
        self.poll_generation = poll_generation

    def _follow_up(self, step, ring_again, schedule, args):
        if step.poll_generation:
            self.poll_later(step.poll_generation, 0)
        if step.worked:
            ring_again()
        elif step.wake_at:
            schedule(args=args, eta=step.wake_at)

    def poll_later(self, generation_id, round_number):
        delays = self.app.config["POLL_DELAYS"]
        delay = delays[min(round_number, len(delays) - 1)]
        self.poll_generation.schedule(args=(generation_id, round_number), delay=delay)

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
        app = self.app
        with app.app_context():
            report = reaper.reap(
                claims.Settings.from_config(app.config), app.config["STALL_SECONDS"]
            )
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


class EmbeddedConsumer(Consumer):
    """A consumer that runs beside the web server in one process and leaves signals alone."""

    def _set_signal_handlers(self):
        pass


def init_app(app):
    app.extensions["batchgen.queue"] = Queue(app, create_huey(app.config))


def get_queue(app):
    return app.extensions["batchgen.queue"]
