"""The instruments and a consumer's metrics server: a call timed and its 429 counted, the
server behind METRICS_TOKEN, and a port already taken leaves the consumer running without."""

import logging
import socket

import pytest
import requests
from prometheus_client import REGISTRY

from tests.metrics import samples, value
from tests.support import free_port
from webapp import metrics


class Refused(Exception):
    def __init__(self, code):
        self.code = code


def _count(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0


def test_a_call_is_timed_and_a_429_counted_whatever_it_raises():
    timed = "batchgen_upstream_request_duration_seconds_count"
    limited = "batchgen_upstream_rate_limited_total"
    before = (_count(timed, operation="poll"), _count(limited, operation="poll"))

    def is_429(error):
        return isinstance(error, Refused) and error.code == 429

    with metrics.upstream_call("poll", is_429):
        pass
    for code in (429, 500):
        with pytest.raises(Refused), metrics.upstream_call("poll", is_429):
            raise Refused(code)

    assert _count(timed, operation="poll") - before[0] == 3
    assert _count(limited, operation="poll") - before[1] == 1


def test_a_consumers_metrics_server_asks_for_the_token():
    port = free_port()
    server = metrics.serve_for_consumer(
        {"METRICS_PORT": port, "METRICS_HOST": "127.0.0.1", "METRICS_TOKEN": "t0ken"}
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        refused = requests.get(url, timeout=5)
        answer = requests.get(url, headers={"Authorization": "Bearer t0ken"}, timeout=5)
    finally:
        server.shutdown()
        server.server_close()

    assert refused.status_code == 401
    assert refused.json() == {"error": metrics.UNAUTHORIZED}
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    found = samples(answer.text)
    assert value(found, "batchgen_upstream_rate_limited_total", operation="create") >= 0


def test_no_port_no_server_and_a_taken_port_is_logged_not_fatal(caplog):
    assert metrics.serve_for_consumer({"METRICS_PORT": None}) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="webapp.metrics"):
            server = metrics.serve_for_consumer({"METRICS_PORT": port, "METRICS_HOST": "127.0.0.1"})

    assert server is None
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text
