"""Reaching the parts a process depends on, within READY_TIMEOUT_SECONDS: the database, the queue
(Huey's storage: Redis, or the SqliteHuey file) and the image storage.

/readyz and `flask check` (health.py) run the three checks; the state metrics (metrics/state.py)
read through the same timed connections. Nothing here waits long on a part that is down:

- the database is reached through an engine of its own, without a pool, whose connections
  give up after the timeout (libpq's connect_timeout, a transaction-local statement_timeout,
  SQLite's busy timeout), so an exhausted or hung pool of the app never holds a probe;
- Redis through a client whose sockets time out;
- and each check runs in a thread that is waited for until the deadline only: a part that
  hangs beyond every timeout (a stuck NFS mount) answers "no answer within N s". A check still
  running from an earlier probe is joined rather than doubled, and reported stuck past its
  own deadline.

Beside the layers: it is used by the composition root's health and metrics rooms only.
"""

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.pool import NullPool

from .extensions import db
from .storage import get_storage

PARTS = ("database", "queue", "storage")


@dataclass(frozen=True)
class Checked:
    """One part's check: ok, how long it took, and why not (a short class name, and the whole
    message for the log and the CLI)."""

    part: str
    ok: bool
    seconds: float
    error: str | None = None
    detail: str | None = None
    backend: str | None = None


def timeout_of(app):
    return float(app.config["READY_TIMEOUT_SECONDS"])


def _probes(app):
    return app.extensions.setdefault("batchgen.probes", {"lock": threading.Lock()})


def _cached(app, name, build):
    probes = _probes(app)
    with probes["lock"]:
        if name not in probes:
            probes[name] = build()
        return probes[name]


def database_engine(app):
    """An engine on the app's database whose every connection is new and gives up quickly."""

    def build():
        timeout = timeout_of(app)
        with app.app_context():
            url = db.engine.url
        connect_args = {}
        if url.get_backend_name() == "postgresql":
            # libpq counts whole seconds (and treats less than 2 as 2).
            connect_args["connect_timeout"] = max(2, math.ceil(timeout))
        elif url.get_backend_name() == "sqlite":
            connect_args["timeout"] = timeout
        return create_engine(url, poolclass=NullPool, connect_args=connect_args)

    return _cached(app, "database", build)


@contextmanager
def database_connection(app):
    """A new connection of `database_engine`; on PostgreSQL its transaction's statements give
    up after the timeout (set_config, local to the transaction: nothing of it outlives the
    connection, behind a PgBouncer too)."""
    engine = database_engine(app)
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            milliseconds = str(max(1, int(timeout_of(app) * 1000)))
            connection.execute(select(func.set_config("statement_timeout", milliseconds, True)))
        yield connection


def redis_client(app):
    """A Redis client on the queue's REDIS_URL whose sockets time out (None when the queue is
    not on Redis)."""
    url = app.config["REDIS_URL"]
    if not url or queue_backend(app) != "redis":
        return None
    timeout = timeout_of(app)
    return _cached(
        app,
        "redis",
        lambda: redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout),
    )


def queue_storage(app):
    """Huey's storage of the app's queue, read through `redis_client` when it is on Redis."""
    import tasks

    huey = tasks.get_queue(app).huey
    client = redis_client(app)
    if client is None:
        return huey.storage
    storage = huey.storage

    def build():
        return type(storage)(
            name=storage.name, connection_pool=client.connection_pool, clean_name=False
        )

    return _cached(app, "queue", build)


def queue_backend(app):
    if app.config.get("HUEY_MEMORY"):
        return "memory"
    return "redis" if app.config["REDIS_URL"] else "sqlite"


def check_database(app):
    with database_connection(app) as connection:
        connection.execute(text("SELECT 1"))


def check_queue(app):
    client = redis_client(app)
    if client is not None:
        client.ping()
    else:
        queue_storage(app).queue_size()  # a read of the SqliteHuey file


def check_storage(app):
    with app.app_context():
        get_storage().check()


CHECKS = {"database": check_database, "queue": check_queue, "storage": check_storage}


class _Run:
    """One check running in its thread, and what it answered."""

    def __init__(self, part, check, app):
        self.part = part
        self.started = time.monotonic()
        self.outcome = None
        self.thread = threading.Thread(
            target=self._run, args=(check, app), name=f"probe-{part}", daemon=True
        )
        self.thread.start()

    def _run(self, check, app):
        try:
            check(app)
        except Exception as error:  # any failure is the part's state, never the probe's crash
            self.outcome = error
        else:
            self.outcome = True


def run_checks(app, parts=PARTS):
    """Check each part at once, each in its thread; answers {part: Checked} by the deadline."""
    timeout = timeout_of(app)
    probes = _probes(app)
    runs = {}
    with probes["lock"]:
        for part in parts:
            running = probes.get(f"run:{part}")
            if running is None or not running.thread.is_alive():
                running = probes[f"run:{part}"] = _Run(part, CHECKS[part], app)
            runs[part] = running
    return {
        part: _wait(run, timeout, queue_backend(app) if part == "queue" else None)
        for part, run in runs.items()
    }


def _wait(run, timeout, backend):
    run.thread.join(max(0.0, run.started + timeout - time.monotonic()))
    seconds = round(time.monotonic() - run.started, 4)
    if run.thread.is_alive():
        message = f"no answer within {timeout:g} s"
        return Checked(run.part, False, seconds, message, message, backend)
    if run.outcome is True:
        return Checked(run.part, True, seconds, backend=backend)
    error = run.outcome
    lines = str(error).strip().splitlines()
    detail = type(error).__name__ + (f": {lines[0]}" if lines else "")
    return Checked(run.part, False, seconds, type(error).__name__, detail, backend)
