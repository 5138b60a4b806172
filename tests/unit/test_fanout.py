"""The change publisher (webapp/fanout.py): a Redis that is down delays no commit for long."""

import time

import pytest
import redis

from tests.support import free_port
from webapp import fanout


def test_a_redis_that_is_down_is_tried_once_per_quiet_period():
    # A port nothing listens on: each try is refused at once, so a try shows up as a raise.
    config = {"HUEY_NAME": "batchgen-test", "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    publisher = fanout.Publisher(config)
    with pytest.raises(redis.ConnectionError):
        publisher(["batch_1"])
    publisher(["batch_2"])  # within the quiet period: not tried, so no raise
    publisher._quiet_until = time.monotonic() - 1  # the period is over
    with pytest.raises(redis.ConnectionError):
        publisher(["batch_3"])
