"""Upstream pacing: one sliding-window limiter that every consumer process shares.

kie.ai accepts about `UPSTREAM_RATE_LIMIT` new generations per `UPSTREAM_RATE_PERIOD` seconds
per API key and answers 429 beyond. A classic token bucket of that capacity lets a full bucket's
burst through and then refills during the same period, so nearly twice the limit can land in one
window. The pacer keeps a log of the slots taken during the last `period` seconds instead, and
hands out a new slot only while that log holds fewer than `limit`:

    a slot is taken at t  only if  fewer than `limit` slots were taken in (t - period, t]

Why no window [s, s + period) ever holds more than `limit` slots: if `limit + 1` did, let t be
the last of them. The other `limit` were taken at or after s > t - period and no later than t,
so they were all in the log at t, and t would have been refused. This needs the checks to run
one at a time and each slot to be stamped inside its check: Redis runs the Lua script alone and
reads its own clock (`TIME`) inside it, so consumers on any host agree; the database holds the
bucket row's lock (SQLite's write lock) and reads the clock only once it holds it. The database
stamps with the app's clock (`utcnow()`): every consumer of a SQLite database shares one host
clock, and PostgreSQL consumers on several hosts need synchronised clocks (any skew between
them is how far a window may stretch).

The window the pacer keeps is the period plus a margin (2.5% of it, at least 0.1 s): the slot
is stamped when it is taken, the upstream counts when the request arrives, and the time in
between varies by milliseconds, more on a slow network or a busy machine. Without the margin,
slots taken exactly one period apart can arrive a hair closer together and put limit + 1 into
one of the upstream's windows.

`release()` removes the slot from the log, exactly as if it had never been taken: the bound
still holds for the slots that did reach the upstream.

If Redis cannot be reached, `acquire()` takes nothing, logs a warning and answers a full period:
the caller tries again later instead of sending unpaced work (which would only earn 429s), and
with REDIS_URL set the queue lives on that Redis too, so nothing else moves meanwhile.
"""

import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import NamedTuple

import redis
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite

from .extensions import db
from .models import PacingBucket, utcnow

log = logging.getLogger(__name__)

MICROS = 1_000_000
MARGIN = 0.025  # of the period, and at least MIN_MARGIN_SECONDS: see the module docstring
MIN_MARGIN_SECONDS = 0.1


def window_seconds(period):
    """The window a pacer of this period keeps: the period plus the jitter margin."""
    return period + max(period * MARGIN, MIN_MARGIN_SECONDS)
EPOCH = datetime(1970, 1, 1)
# A Redis that does not answer must not hold a worker for long.
REDIS_TIMEOUT_SECONDS = 2.0

# KEYS[1]: sorted set of the slots in the window, scored by Redis' clock in microseconds.
# ARGV: limit, period in microseconds, the new slot's unique member.
# Answers {0, now} when the slot was taken, else {microseconds until one is free, now}.
# Scores go to Redis as "%.0f" strings: Lua would print a bare number with 14 digits only.
SLIDING_WINDOW_SCRIPT = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - period))
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period / 1000))
  return {0, now}
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
return {oldest + period - now, now}
"""


# Read-only: how long until a slot may be free (0 if one is free now). KEYS/ARGV as above.
PEEK_SCRIPT = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local since = string.format('(%.0f', now - period)
if redis.call('ZCOUNT', KEYS[1], since, '+inf') < limit then
  return 0
end
local first = redis.call('ZRANGEBYSCORE', KEYS[1], since, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
return tonumber(first[2]) + period - now
"""


class Slot(NamedTuple):
    """One slot taken: when (seconds on the backend's clock), and the backend's handle to it."""

    taken_at: float
    token: object


class Pacer:
    """At most `limit` slots in any `period` seconds; backends say how the log is kept."""

    def __init__(self, limit, period):
        if period <= 0:
            raise ValueError("UPSTREAM_RATE_PERIOD must be positive")
        self.limit = limit
        self.period_us = round(window_seconds(period) * MICROS)
        self._mine = threading.local()

    def acquire(self):
        """Take a slot: 0.0 if taken now, else the seconds until one may be free (none taken)."""
        wait_us, slot = self._take()
        if slot is None:
            # A clock stepped back could ask for more; a full period always frees a slot.
            return min(wait_us, self.period_us) / MICROS
        self._mine.slot = slot
        return 0.0

    def peek(self):
        """Seconds until a slot may be free (0.0 if one is free now), taking nothing.

        A hint for not starting work that could not be sent: another caller may take the free
        slot first, so only acquire() counts.
        """
        return min(self._peek(), self.period_us) / MICROS

    def release(self):
        """Give back the slot this thread took last, when it found nothing to send after all."""
        slot = self.last_slot()
        if slot is not None:
            self._mine.slot = None
            self._give_back(slot)

    def last_slot(self):
        """The slot this thread took last and has not given back, or None."""
        return getattr(self._mine, "slot", None)

    def _take(self):
        """Answers (0, Slot) when a slot was taken, else (microseconds to wait, None)."""
        raise NotImplementedError

    def _give_back(self, slot):
        raise NotImplementedError

    def _peek(self):
        """Microseconds until a slot may be free."""
        raise NotImplementedError


class Unpaced:
    """UPSTREAM_RATE_LIMIT = 0: pacing is off and every acquire() succeeds at once."""

    def acquire(self):
        return 0.0

    def peek(self):
        return 0.0

    def release(self):
        """Nothing was counted, so nothing goes back."""


UNPACED = Unpaced()


class RedisPacer(Pacer):
    """The log as a Redis sorted set, checked and written by one Lua script."""

    def __init__(self, client, key, limit, period):
        super().__init__(limit, period)
        self.client = client
        self.key = key
        self._script = client.register_script(SLIDING_WINDOW_SCRIPT)
        self._peek_script = client.register_script(PEEK_SCRIPT)

    def _take(self):
        member = secrets.token_hex(8)
        try:
            wait_us, now_us = self._script(
                keys=[self.key], args=[self.limit, self.period_us, member]
            )
        except redis.RedisError as error:
            log.warning("pacing %s: Redis failed (%s); waiting a full period", self.key, error)
            return self.period_us, None
        return (0, Slot(now_us / MICROS, member)) if wait_us == 0 else (wait_us, None)

    def _peek(self):
        try:
            return self._peek_script(keys=[self.key], args=[self.limit, self.period_us])
        except redis.RedisError as error:
            log.warning("pacing %s: Redis failed (%s); waiting a full period", self.key, error)
            return self.period_us

    def _give_back(self, slot):
        try:
            self.client.zrem(self.key, slot.token)
        except redis.RedisError as error:
            # The slot stays counted until it leaves the window: a little capacity, not safety.
            log.warning("pacing %s: could not give a slot back (%s)", self.key, error)


class DatabasePacer(Pacer):
    """The log as a JSON list in the bucket's row, read and written under the row's lock.

    Each call is one short transaction on its own connection (nothing but these statements runs
    inside it), so it never commits the caller's session. Call it outside a write transaction:
    on SQLite it would otherwise wait for the caller's own write lock until the busy timeout.
    """

    def __init__(self, engine, name, limit, period):
        super().__init__(limit, period)
        self.engine = engine
        self.name = name
        insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._create_row = insert(PacingBucket).values(name=name, taken=[]).on_conflict_do_nothing()

    def _take(self):
        with self.engine.begin() as connection:
            taken = self._lock(connection)
            now_us = _micros(utcnow())
            recent = [stamp for stamp in taken if stamp > now_us - self.period_us]
            if len(recent) >= self.limit:
                return min(recent) + self.period_us - now_us, None
            self._write(connection, [*recent, now_us])
        return 0, Slot(now_us / MICROS, now_us)

    def _peek(self):
        with self.engine.connect() as connection:
            taken = connection.scalar(
                select(PacingBucket.taken).where(PacingBucket.name == self.name)
            )
        now_us = _micros(utcnow())
        recent = [stamp for stamp in taken or () if stamp > now_us - self.period_us]
        return 0 if len(recent) < self.limit else min(recent) + self.period_us - now_us

    def _give_back(self, slot):
        with self.engine.begin() as connection:
            taken = self._lock(connection)
            if slot.token in taken:
                taken.remove(slot.token)
                self._write(connection, taken)

    def _lock(self, connection):
        """Create the row if missing and lock it before reading; answers its log.

        The INSERT comes first because it is a write: on SQLite it takes the database's write
        lock (even when the row exists and nothing is inserted), so no other writer can slip in
        between our read and our write. On PostgreSQL, FOR UPDATE locks the row.
        """
        connection.execute(self._create_row)
        return connection.scalar(
            select(PacingBucket.taken).where(PacingBucket.name == self.name).with_for_update()
        )

    def _write(self, connection, taken):
        connection.execute(
            update(PacingBucket).where(PacingBucket.name == self.name).values(taken=taken)
        )


def _micros(moment):
    """Microseconds since the epoch of a naive UTC datetime: whole numbers compare exactly."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def create_pacer(app, name, limit=None, period=None):
    """A pacer from the app's settings (UPSTREAM_RATE_LIMIT per UPSTREAM_RATE_PERIOD unless
    given): off, on Redis when REDIS_URL is set, else in the database."""
    config = app.config
    limit = config["UPSTREAM_RATE_LIMIT"] if limit is None else limit
    period = config["UPSTREAM_RATE_PERIOD"] if period is None else period
    if limit <= 0:
        return UNPACED
    if config["REDIS_URL"]:
        client = redis.Redis.from_url(
            config["REDIS_URL"],
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        return RedisPacer(client, f"{config['HUEY_NAME']}:pacing:{name}", limit, period)
    with app.app_context():
        return DatabasePacer(db.engine, name, limit, period)


def pacer_for(app, name="kie", limit=None, period=None):
    """The process's one pacer for `name`: its threads must share it to give back their slots."""
    pacers = app.extensions.setdefault("batchgen.pacers", {})
    if name not in pacers:
        # Two threads may both build one; setdefault keeps the first, and building is cheap.
        pacers.setdefault(name, create_pacer(app, name, limit, period))
    return pacers[name]
