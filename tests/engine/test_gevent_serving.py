"""The web's serving model as ops run it: gunicorn with deploy/gunicorn.conf.py (the gevent
worker) on PostgreSQL and Redis, one worker, a real `huey_consumer` running the batch.

Hundreds of event streams of one batch are open at once on that one worker (more than its
database pool's 15 connections, so no stream may hold one while it waits), and meanwhile a
photo request waits for its image and the status route answers; then every stream has every
image's terminal event and the batch event. The streams are read by one thread of the test
over raw sockets (HTTP/1.0: the answer ends when the stream does)."""

import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.consumers import PROJECT_ROOT, ConsumerProcess, queue_name
from tests.support import ApiClient, create_batch_id, create_user, free_port, make_app, photo_body

pytestmark = [pytest.mark.e2e, pytest.mark.redis]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
STREAMS = 250
IMAGES = 12
# One image at a time, 0.4 s each: the batch runs for about 5 s, the streams stay open that long.
SETTINGS = {"LOCAL_ENGINE_DELAY": "0.4", "EVENTS_COALESCE_SECONDS": "0.2"}
BOUND = 60  # seconds for the streams, from the consumer's start to the last batch event


class Streams:
    """STREAMS event streams of one batch, over raw sockets, read by one thread."""

    def __init__(self, port, path, token, count):
        request = (
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        self.received = [b""] * count
        self.ended = [False] * count
        self.selector = selectors.DefaultSelector()
        for index in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, index)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        deadline = time.monotonic() + BOUND + 60
        while not all(self.ended) and time.monotonic() < deadline:
            for key, _ in self.selector.select(timeout=0.5):
                chunk = key.fileobj.recv(65536)
                if chunk:
                    self.received[key.data] += chunk
                else:
                    self.ended[key.data] = True
                    self.selector.unregister(key.fileobj)
                    key.fileobj.close()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()

    def count(self, marker):
        return sum(marker in text for text in list(self.received))

    def events(self, index):
        head, _, body = self.received[index].partition(b"\r\n\r\n")
        events = []
        for block in body.decode().split("\n\n"):
            fields = dict(
                line.split(": ", 1) for line in block.split("\n") if line and line[0] != ":"
            )
            if "event" in fields:
                events.append(fields)
        return head.decode(), events


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up after {timeout} s waiting for {what}")


def test_gevent_worker_holds_hundreds_of_streams_while_a_photo_waits_and_status_answers(
    tmp_path, pg_url, redis_url
):
    app = make_app(
        tmp_path, pg_url, HUEY_MEMORY=False, REDIS_URL=redis_url, HUEY_NAME=queue_name()
    )
    user_id, token = create_user(app, credits=100)
    batch_id = create_batch_id(ApiClient(app, user_id, token), count=IMAGES, concurrency=1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "DATABASE_URL": pg_url,
        "REDIS_URL": redis_url,
        "HUEY_NAME": app.config["HUEY_NAME"],
        "SECRET_KEY": app.config["SECRET_KEY"],
        "INSTANCE_PATH": app.instance_path,
        "MEDIA_ROOT": app.config["MEDIA_ROOT"],
        "WEB_BIND": f"127.0.0.1:{port}",
        "WEB_WORKERS": "1",
        # Opening a stream counts as a poll; STREAMS of one user in a second must not be 429s.
        "STATUS_RATE_LIMIT": "1000000 per second",
        **SETTINGS,
    }
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [GUNICORN, "-c", "deploy/gunicorn.conf.py", "app:app"],
            cwd=PROJECT_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT,
        )
    consumer = ConsumerProcess(app, tmp_path / "consumer.log", **SETTINGS)
    try:

        def answering():
            assert server.poll() is None, log_path.read_text()
            try:
                return requests.get(f"{base}/api/models", timeout=2).ok
            except requests.RequestException:
                return False

        wait_until(answering, 60, "gunicorn")
        assert "Using worker: gevent" in log_path.read_text()

        path = f"/api/generate/batch/{batch_id}/events"
        streams = Streams(port, path, token, STREAMS)
        # Every stream has its first snapshot (its summary) while nothing runs: all open at once.
        wait_until(lambda: streams.count(b"event: summary") == STREAMS, 30, "every snapshot")

        consumer.start(workers=4, periodic=False)
        headers = {"Authorization": f"Bearer {token}"}
        photo = {}

        def take_photo():
            started = time.monotonic()
            answer = requests.post(
                f"{base}/api/generate/photo", json=photo_body(), headers=headers, timeout=90
            )
            photo.update(
                answer=answer, seconds=time.monotonic() - started,
                batches_ended=streams.count(b"event: batch"),
            )

        photographer = threading.Thread(target=take_photo)
        photographer.start()
        status_times = []
        while photographer.is_alive() and len(status_times) < 20:
            started = time.monotonic()
            answer = requests.get(f"{base}/api/generate/batch/{batch_id}", headers=headers,
                                  timeout=10)
            assert answer.status_code == 200, answer.text
            status_times.append(time.monotonic() - started)
            time.sleep(0.1)
        photographer.join(timeout=90)
        wait_until(lambda: all(streams.ended), BOUND, "every stream to end")
    finally:
        consumer.stop()
        server.terminate()
        server.wait(timeout=40)

    # (b) The photo waited for its image, and got it, while every stream was still open.
    assert photo["answer"].status_code == 200, photo["answer"].text
    assert photo["answer"].json()["status"] == "success"
    assert photo["batches_ended"] == 0, "the batch ended before the photo: nothing overlapped"
    # (c) The status route answered meanwhile, promptly.
    assert status_times and max(status_times) < 5, status_times
    # (a) Every stream: 200, every image's success, the batch event last.
    for index in range(STREAMS):
        head, events = streams.events(index)
        assert head.startswith("HTTP/1.") and " 200 " in head.split("\r\n")[0], head
        finished = {
            json.loads(event["data"])["generationId"]
            for event in events
            if event["event"] == "generation" and json.loads(event["data"])["status"] == "success"
        }
        assert len(finished) == IMAGES, (index, events)
        assert events[-1]["event"] == "batch", events[-1]
        assert json.loads(events[-1]["data"])["status"] == "completed"
    assert "QueuePool limit" not in log_path.read_text()
