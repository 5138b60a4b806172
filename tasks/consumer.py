"""The Huey instance of one app, and the consumers that run it.

Each app has its own Huey (tests build many apps in one process; `app.py` exposes the one of
the app it builds as `huey`). That Huey runs every task inside its app's context, so the task
functions of `tasks` take ids only and find the database, the provider and the storage there.
Huey keeps no results: the answers live in the database.
"""

from huey import MemoryHuey, RedisHuey, SqliteHuey
from huey.consumer import Consumer, Scheduler

from webapp import logs, metrics


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


class _AppHuey:
    """A Huey bound to one Flask app: it runs tasks in that app's context, and
    `huey_consumer app.huey` builds a BatchgenConsumer for it."""

    reap_seconds = 60
    app = None  # set by create_huey

    def create_consumer(self, **options):
        logs.adopt_huey_logger(self.app)  # huey_consumer has set up its logger by now
        # Its own metrics on METRICS_PORT, if set (`flask serve`'s consumer never comes here:
        # the web's /metrics has its events).
        metrics.serve_for_consumer(self.app.config)
        return BatchgenConsumer(self, **options)

    def execute(self, task, timestamp=None):
        with self.app.app_context():
            return super().execute(task, timestamp)

    def notify_interrupted_tasks(self):
        """A stopping consumer tells the interrupted tasks' handlers, in the app's context too."""
        with self.app.app_context():
            super().notify_interrupted_tasks()


class AppMemoryHuey(_AppHuey, MemoryHuey):
    pass


class AppRedisHuey(_AppHuey, RedisHuey):
    pass


class AppSqliteHuey(_AppHuey, SqliteHuey):
    pass


def create_huey(app):
    """The app's Huey: on Redis when REDIS_URL is set, else on a SQLite file under instance/
    (in memory for tests that ask for it with HUEY_MEMORY)."""
    config = app.config
    name = config["HUEY_NAME"]
    options = {"results": False, "utc": True}
    if config.get("HUEY_MEMORY"):
        huey = AppMemoryHuey(name, **options)
    elif config["REDIS_URL"]:
        huey = AppRedisHuey(name, url=config["REDIS_URL"], **options)
    else:
        huey = AppSqliteHuey(name, filename=config["HUEY_SQLITE_PATH"], **options)
    huey.reap_seconds = config["REAP_SECONDS"]
    huey.app = app
    return huey
