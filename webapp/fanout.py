"""Redis pub/sub for the event streams: consumers (and web processes) publish "batch X
changed" after their commit (generation/feed.py calls the publisher set here); each web process
holds one subscriber (api/event_hub.py) that fans the notice out to its streams.

One channel per app's HUEY_NAME (pub/sub is not per Redis database, so apps sharing a Redis
never hear each other), carrying batch ids. A notice lost (Redis down, a subscriber
reconnecting) only delays an event: the hub also compares versions on a timer.
"""

import logging
import time

import redis

log = logging.getLogger(__name__)

# Each call to Redis is bounded, so a Redis that does not answer delays no commit for long.
TIMEOUT_SECONDS = 2.0
QUIET_SECONDS = 5.0


def channel(config):
    return f"{config['HUEY_NAME']}:batch-changed"


def connect(config):
    return redis.Redis.from_url(
        config["REDIS_URL"],
        socket_timeout=TIMEOUT_SECONDS,
        socket_connect_timeout=TIMEOUT_SECONDS,
    )


class Publisher:
    """Publishes batch ids on the app's channel; the connection is opened at the first one.

    After a failure it publishes nothing for QUIET_SECONDS: a Redis that is down costs one
    timeout per that time, not one per commit (the streams' timer finds the changes)."""

    def __init__(self, config):
        self.config = config
        self.channel = channel(config)
        self._client = None
        self._quiet_until = 0.0

    def __call__(self, batch_ids):
        if time.monotonic() < self._quiet_until:
            return
        try:
            if self._client is None:
                self._client = connect(self.config)
            for batch_id in batch_ids:
                self._client.publish(self.channel, batch_id)
        except redis.RedisError:
            self._quiet_until = time.monotonic() + QUIET_SECONDS
            raise


def init_app(app):
    """With REDIS_URL set, every commit that changed a batch publishes it."""
    from .generation import feed

    if app.config["REDIS_URL"]:
        feed.set_publisher(app, Publisher(app.config))
