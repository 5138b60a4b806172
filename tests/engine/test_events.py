"""The event stream of a batch (GET /api/generate/batch/<id>/events), over real HTTP (Werkzeug's
threaded server in the test's process), with real consumers: the events in order ending with
`batch`, a reconnect with Last-Event-ID that gets exactly what it missed, another user's
batch, a consumer killed and replaced under a stream, one read per change for many viewers,
and the notices consumers publish on Redis."""

import json
import re
import threading
import time

import pytest
import redis
import requests

from tests.consumers import ConsumerProcess, queue_name
from tests.support import (
    ApiClient,
    create_batch_id,
    create_user,
    free_port,
    make_app,
    read_sse,
    running_consumer,
    serving,
    wait_for,
)
from webapp.api.event_hub import hub_of
from webapp.fanout import channel

pytestmark = [pytest.mark.e2e]

# Long enough that the images finish one after another, in several reads.
SLOW = {"LOCAL_ENGINE_DELAY": 0.4, "EVENTS_CHECK_SECONDS": 0.2, "EVENTS_COALESCE_SECONDS": 0.2}
STREAM_TIMEOUT = 120


class Event(dict):
    @property
    def data(self):
        return json.loads(self["data"])


def read_events(response, stop_after=None):
    """The events of an open stream (comments skipped), until it ends or `stop_after` came."""
    events = read_sse(response.iter_lines(decode_unicode=True), stop_after)
    response.close()
    return [Event(fields) for fields in events]


def open_stream(base, batch_id, token, last_event_id=None, **params):
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    return requests.get(
        f"{base}/api/generate/batch/{batch_id}/events",
        headers=headers,
        params=params,
        stream=True,
        timeout=STREAM_TIMEOUT,
    )


def sort_key(event_id):
    version, _, rest = event_id.partition(".")
    if rest == "":
        return (int(version), 1, 0)
    if rest == "end":
        return (int(version), 2, 0)
    return (int(version), 0, int(rest))


def assert_well_formed(events, image_count):
    """Ids strictly increasing, none repeated, the `batch` event last and only there, and every
    image's last event terminal."""
    keys = [sort_key(event["id"]) for event in events]
    assert keys == sorted(keys) and len(set(keys)) == len(keys), keys
    assert [event["event"] for event in events].count("batch") == 1
    assert events[-1]["event"] == "batch"
    assert events[-2]["event"] == "summary"
    last = final_states(events)
    assert len(last) == image_count
    assert {entry["status"] for entry in last.values()} <= {"success", "failed", "cancelled"}


def final_states(events):
    """Each image's last entry; its link on the test client's host, as status_results has it
    (a stream signs links for the host it was asked on)."""
    last = {}
    for event in events:
        if event["event"] == "generation":
            entry = dict(event.data)
            if entry.get("imageUrl"):
                entry["imageUrl"] = re.sub(r"^http://[^/]+", "http://localhost", entry["imageUrl"])
            last[entry["generationId"]] = entry
    return last


def status_results(client, batch_id):
    detail = client.get(f"/api/generate/batch/{batch_id}").get_json()
    return detail, {entry["generationId"]: entry for entry in detail["results"]}


def test_a_batch_streams_its_images_in_order_and_ends_with_batch(tmp_path, database_url):
    app = make_app(tmp_path, database_url, **SLOW)
    user_id, token = create_user(app, credits=100)
    client = ApiClient(app, user_id, token)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(app, port):
        batch_id = create_batch_id(client, count=5, concurrency=2)
        response = open_stream(base, batch_id, token)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        with running_consumer(app, workers=2):
            events = read_events(response)
    assert_well_formed(events, 5)
    # Seen along the way: images running before they were done (several reads, not one).
    statuses = [event.data["status"] for event in events if event["event"] == "generation"]
    assert "processing" in statuses and statuses.count("success") == 5
    # Each entry exactly as the status answer has it, and the counts as it counts them.
    detail, results = status_results(client, batch_id)
    assert final_states(events) == results
    assert events[-2].data == detail["summary"]
    batch = events[-1].data
    assert batch["batchId"] == batch_id and batch["status"] == "completed"
    assert batch["finishedAt"] == detail["finishedAt"]
    assert events[-1]["id"] == f"{events[-2]['id']}.end"


def test_a_reconnect_gets_exactly_what_it_missed(tmp_path, database_url):
    app = make_app(tmp_path, database_url, **SLOW)
    user_id, token = create_user(app, credits=100)
    client = ApiClient(app, user_id, token)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(app, port):
        batch_id = create_batch_id(client, count=6, concurrency=2)
        whole = {}

        def watch_all():
            whole["events"] = read_events(open_stream(base, batch_id, token))

        watcher = threading.Thread(target=watch_all)
        watcher.start()
        wait_for(lambda: hub_of(app).watches.get(batch_id))
        with running_consumer(app, workers=2):
            # A viewer that leaves mid-batch, after eight events...
            first = read_events(open_stream(base, batch_id, token), stop_after=8)
            cut = first[-1]["id"]
            # ...and comes back while it runs.
            second = read_events(open_stream(base, batch_id, token, last_event_id=cut))
        watcher.join(STREAM_TIMEOUT)
        full = whole["events"]
        # Back once it is over: what came after the cut, each image once, as it ended (the
        # query parameter for clients that cannot set the header).
        third = read_events(open_stream(base, batch_id, token, lastEventId=cut))
        # From the end: 204, which tells an EventSource there is nothing left.
        ended = open_stream(base, batch_id, token, last_event_id=full[-1]["id"])
        assert ended.status_code == 204
    assert sort_key(cut) < sort_key(full[-2]["id"])  # the cut was mid-batch
    assert_well_formed(full, 6)
    assert_well_formed(first + second, 6)
    assert final_states(first + second) == final_states(full)
    after_cut = [e for e in full if sort_key(e["id"]) > sort_key(cut)]
    expected = sorted(
        {e.data["generationId"]: e for e in after_cut if e["event"] == "generation"}.values(),
        key=lambda e: sort_key(e["id"]),
    )
    assert [e for e in third if e["event"] == "generation"] == expected
    assert third[-2:] == full[-2:]  # the last summary and the batch event, ids and all


def test_another_users_batch_is_a_404_before_any_stream(tmp_path):
    app = make_app(tmp_path)
    alice = create_user(app, "alice")
    _, bob_token = create_user(app, "bob")
    batch_id = create_batch_id(ApiClient(app, *alice), count=1)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(app, port):
        for batch in (batch_id, "b_unknown", "not an id!"):
            answer = open_stream(base, batch, bob_token)
            assert answer.status_code == 404, batch
            assert answer.headers["Content-Type"] == "application/json"
            assert "error" in answer.json()
        anonymous = requests.get(f"{base}/api/generate/batch/{batch_id}/events", timeout=10)
        assert anonymous.status_code == 401 and "error" in anonymous.json()
        bad = open_stream(base, batch_id, alice[1], last_event_id="yesterday")
        assert bad.status_code == 400 and bad.json()["field"] == "lastEventId"
    assert hub_of(app).watches == {}


def test_many_viewers_cost_one_read_per_change(tmp_path):
    """Five streams of one batch see the same events, from the reads one stream would cause."""
    app = make_app(tmp_path, **SLOW)
    user_id, token = create_user(app, credits=100)
    client = ApiClient(app, user_id, token)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(app, port):
        batch_id = create_batch_id(client, count=4, concurrency=2)
        seen = [None] * 5

        def watch(index):
            seen[index] = read_events(open_stream(base, batch_id, token))

        viewers = [threading.Thread(target=watch, args=(i,)) for i in range(5)]
        for viewer in viewers:
            viewer.start()
        wait_for(lambda: (w := hub_of(app).watches.get(batch_id)) and w.viewers == 5)
        reads_before = hub_of(app).reads
        with running_consumer(app, workers=2):
            for viewer in viewers:
                viewer.join(STREAM_TIMEOUT)
    assert all(events == seen[0] for events in seen)
    assert_well_formed(seen[0], 4)
    summaries = [event for event in seen[0] if event["event"] == "summary"]
    # Every read after the first made one snapshot, which every stream summed up once.
    assert hub_of(app).reads - reads_before <= len(summaries)


@pytest.mark.redis
def test_a_stream_outlives_a_consumer_killed_and_replaced(tmp_path, database_url, redis_url):
    """Consumers in processes of their own publish each change on Redis; one is killed -9
    mid-batch and another started: the stream goes on and ends with `batch`."""
    settings = {
        "LOCAL_ENGINE_DELAY": 1.0,
        "LEASE_SECONDS": 4,
        "STALL_SECONDS": 2,
        "REAP_SECONDS": 1,
    }
    app = make_app(
        tmp_path,
        database_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_url,
        HUEY_NAME=queue_name(),
        **settings,
    )
    user_id, token = create_user(app, credits=100)
    client = ApiClient(app, user_id, token)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "consumers.log"
    with serving(app, port):
        batch_id = create_batch_id(client, count=6, concurrency=2)
        response = open_stream(base, batch_id, token)
        first_events = read_events(response, stop_after=1)  # the stream is open: the start
        response = open_stream(base, batch_id, token, last_event_id=first_events[-1]["id"])
        box = {}
        reader = threading.Thread(target=lambda: box.setdefault("events", read_events(response)))
        reader.start()
        with ConsumerProcess(app, log_path, **settings) as first:
            first.start(workers=2)
            wait_for(lambda: "success" in _statuses(client, batch_id), timeout=60)
            first.kill_9()
        with ConsumerProcess(app, log_path, **settings) as second:
            second.start(workers=2)
            reader.join(STREAM_TIMEOUT)
            second.stop()
        assert not reader.is_alive()
    events = first_events + box["events"]
    assert_well_formed(events, 6)
    _, results = status_results(client, batch_id)
    assert final_states(events) == results
    assert events[-1].data["status"] == "completed"


def _statuses(client, batch_id):
    _, results = status_results(client, batch_id)
    return {entry["status"] for entry in results.values()}


@pytest.mark.redis
def test_a_commit_that_changes_a_batch_publishes_it(tmp_path, redis_url):
    """After the commit, not before: a consumer's claim and outcome are heard on the app's
    channel; without REDIS_URL nothing is published (the web's timer compares versions)."""
    name = queue_name()
    app = make_app(tmp_path, REDIS_URL=redis_url, HUEY_NAME=name)
    listener = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel(app.config))
    wait_for(lambda: listener.get_message(timeout=0.1) is None)
    user_id, token = create_user(app, credits=100)
    client = ApiClient(app, user_id, token)
    batch_id = create_batch_id(client, count=1)
    heard = []
    deadline = time.monotonic() + 10
    with running_consumer(app, workers=1):
        while time.monotonic() < deadline and len(heard) < 3:
            message = listener.get_message(timeout=0.5)
            if message:
                heard.append(message["data"].decode())
    listener.close()
    assert heard and set(heard) <= {batch_id, "*"}
