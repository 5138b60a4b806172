"""The chaos run (issue 15): the whole fleet on this machine survives random kills.

Two gunicorn servers of two workers each and three `huey_consumer` processes (all running the
reaper, which takes turns) on PostgreSQL, a Redis of the run's own, the storage, and the stub
kie.ai calling back to the first gunicorn. Five users create 200 images in 20 batches over HTTP,
each create under an Idempotency-Key and retried until it is answered. Meanwhile, at moments
drawn from a seeded generator (the seed is printed; CHAOS_SEED replays a plan), ten faults:
kill -9 a consumer (started again), kill -9 a web worker (gunicorn starts another), and Redis
killed and started again empty (the queue, its schedule and the pacer's log are lost; the
reaper finds all the work again in the database).

Then every image is terminal and none is lost, each image was one upstream task, and the money
is exact. The figures (kills, recovery after each, makespan, retries) are printed and written to
TEST_ARTIFACTS/chaos.txt. Run it alone with `pytest -m chaos`.
"""

import json
import os
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from sqlalchemy import func, select

from devtools.kie_stub import KieStub
from tests.fleet import BIN, PROJECT_ROOT, REDIS_SERVER, Fleet, RedisServer, wait_until
from tests.support import IN_CI, batch_body, create_user, free_port, make_app
from webapp import billing
from webapp.extensions import db
from webapp.models import (
    Batch,
    BatchStatus,
    Generation,
    GenerationStatus,
    LedgerEntry,
    LedgerKind,
    utcnow,
)

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

USERS = 5
BATCHES = 20  # 4 per user
IMAGES = 10  # per batch: 200 in all
PRICE = 3  # flux-2 at 1k
KILLS = ["consumer"] * 4 + ["web"] * 3 + ["redis"] * 3  # ten in all, in a seeded order
HARD_TIMEOUT_SECONDS = 300  # the whole run, start-up included: fail loudly, never hang
SETTLE_SECONDS = 150  # after the last fault, for every image to end
UPSTREAM_SECONDS = 0.5  # the stub finishes a task this long after its create
# Leases that run out 4 s after a crash, a reaper every second, a stall noticed after 2 s
# (tests/engine/test_recovery.py's values), quick retries, the pacer and the stub at 100 per 10 s.
FLEET_SETTINGS = {
    "GENERATION_BACKEND": "kie",
    "KIE_API_KEY": "test-key",
    "LEASE_SECONDS": 4,
    "STALL_SECONDS": 2,
    "REAP_SECONDS": 1,
    "RETRY_BASE_SECONDS": 0.2,
    "RETRY_CAP_SECONDS": 1,
    "UPSTREAM_RATE_LIMIT": 100,
    "UPSTREAM_RATE_PERIOD": 10,
    "PHOTO_WAIT_SECONDS": 0,  # an Idempotency-Key's lock then goes stale after 60 s
    "RATE_LIMITS_ENABLED": 0,
    "MAX_CONCURRENCY": 8,
}
ARTIFACTS = os.environ.get("TEST_ARTIFACTS")


class ChaosTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise ChaosTimeout(f"the chaos run took longer than {HARD_TIMEOUT_SECONDS} s")


class Creator:
    """Users' clients over HTTP: each create under its own Idempotency-Key, resent (the very
    same bytes) after a lost answer, a 5xx or a 409 until it is answered."""

    def __init__(self, webs, users, rng):
        self.webs = webs
        self.users = users  # [(user_id, token)]
        self.rng = rng
        self.lock = threading.Lock()
        self.in_flight = {}  # create number → the WebServer it is being sent to
        self.created = {}  # create number → the answer's JSON
        self.answers = Counter()  # what the creates met: "lost", "409", "503", "replayed", …
        self.retried = {}  # create number → seconds until a create that was resent was answered
        self.errors = []
        self.threads = []

    def start(self, number, delay):
        thread = threading.Thread(target=self._run, args=(number, delay), daemon=True)
        self.threads.append(thread)
        thread.start()

    def _run(self, number, delay):
        try:
            time.sleep(delay)
            self._create(number)
        except Exception as error:  # named in the test's failure
            with self.lock:
                self.errors.append(f"create {number}: {error!r}")

    def _create(self, number):
        user_id, token = self.users[number % len(self.users)]
        body = json.dumps(batch_body(IMAGES, prompt=f"Chaos {number}", concurrency=4))
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        sent = time.monotonic()
        deadline = sent + 120  # a key whose request died is stale after 60 s
        resent = False
        with requests.Session() as http:
            while time.monotonic() < deadline:
                with self.lock:
                    web = self.rng.choice(self.webs)
                    self.in_flight[number] = web
                try:
                    answer = http.post(
                        f"{web.base_url}/api/generate/batch", data=body, headers=headers, timeout=30
                    )
                except requests.RequestException:
                    self._count("lost")
                    resent = True
                    time.sleep(0.3)
                    continue
                finally:
                    with self.lock:
                        self.in_flight.pop(number, None)
                if answer.status_code == 200:
                    if answer.headers.get("Idempotent-Replayed") == "true":
                        self._count("replayed")
                    with self.lock:
                        self.created[number] = answer.json()
                        if resent:
                            self.retried[number] = time.monotonic() - sent
                    return
                if answer.status_code in (409, 500, 502, 503):
                    # 409: the key's first request is "still in progress" until its lock is
                    # stale (a worker killed mid-request never releases it).
                    self._count(str(answer.status_code))
                    resent = True
                    time.sleep(2.0 if answer.status_code == 409 else 0.5)
                    continue
                raise AssertionError(f"{answer.status_code}: {answer.text[:300]}")
        raise AssertionError("no answer within 120 s")

    def _count(self, what):
        with self.lock:
            self.answers[what] += 1

    def sending_to(self):
        with self.lock:
            return next(iter(self.in_flight.values()), None)

    @property
    def resends(self):
        with self.lock:
            return sum(n for what, n in self.answers.items() if what != "replayed")


def _kill(kind, fleet, redis_server, creator, rng):
    """Do one fault; answers what it hit, in words."""
    if kind == "consumer":
        number = rng.randrange(len(fleet.consumers))
        consumer = fleet.consumers[number]
        consumer.kill_9()
        time.sleep(rng.uniform(0.0, 1.0))
        consumer.start("thread", workers=4)
        fleet.wait_started(consumer)
        return f"consumer {number + 1} (pid {consumer.process.pid} now)"
    if kind == "web":
        # At a create in flight when there is one: its answer may be lost, and it is retried.
        web = wait_for_value(creator.sending_to, 3.0) or rng.choice(fleet.webs)
        time.sleep(rng.uniform(0.0, 0.05))
        pid = web.kill_worker(rng)
        wait_until(lambda: web.replaced(pid), 60, f"gunicorn to replace worker {pid}")
        return f"web worker {pid} of :{web.port}"
    down = rng.uniform(0.5, 2.0)
    redis_server.restart_empty(down)
    return f"redis down {down:.1f} s, back empty"


def wait_for_value(produce, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = produce()
        if value is not None:
            return value
        time.sleep(0.01)
    return None


def _rows(app):
    with app.app_context():
        rows = db.session.execute(
            select(Generation.id, Generation.status, Generation.finished_at, Generation.attempts)
        ).all()
        db.session.rollback()
        return rows


def _terminal(app):
    return sum(row.status in GenerationStatus.TERMINAL for row in _rows(app))


def test_the_fleet_loses_nothing_and_pays_once_through_ten_random_kills(
    tmp_path, pg_url, s3_place, s3_prefix
):
    if not Path(REDIS_SERVER).exists():
        if IN_CI:
            pytest.fail(f"the chaos run needs {REDIS_SERVER} under CI=true")
        pytest.skip(f"the chaos run starts a Redis of its own: {REDIS_SERVER} is not installed")
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"\nchaos seed {seed} (CHAOS_SEED={seed} replays this plan)")
    plan, chance = random.Random(seed), random.Random(seed + 1)
    order = plan.sample(KILLS, len(KILLS))
    gaps = [plan.uniform(2.0, 4.5) for _ in order]

    clock = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HARD_TIMEOUT_SECONDS)
    redis_server = RedisServer(tmp_path)
    stub = KieStub(latency=UPSTREAM_SECONDS, polls_until_done=1, rate_limit=(100, 10))
    port = free_port()
    storage = s3_place.settings(s3_prefix)  # the S3 server (moto's, unless TEST_S3_URL)
    app = make_app(
        tmp_path,
        pg_url,
        HUEY_MEMORY=False,
        REDIS_URL=redis_server.url,
        HUEY_NAME="chaos",
        **storage,
    )
    fleet = Fleet(
        app,
        tmp_path,
        **storage,
        KIE_API_BASE=stub.base_url,
        KIE_UPLOAD_BASE=stub.base_url,
        PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
        **FLEET_SETTINGS,
    )
    faults = []
    try:
        redis_server.start()
        users = [create_user(app, name=f"chaos-{n}", credits=1000) for n in range(USERS)]
        webs = [fleet.web("web-1", port=port), fleet.web("web-2")]
        for server in webs:
            server.start()
        for number in range(3):
            fleet.consumer(f"consumer-{number + 1}").start("thread", workers=4)
        for consumer in fleet.consumers:
            fleet.wait_started(consumer)
        creator = Creator(webs, users, random.Random(seed + 2))
        print(f"the fleet is up after {time.monotonic() - clock:.1f} s")

        began = time.monotonic()
        started_at = utcnow()
        for round_number, (kind, gap) in enumerate(zip(order, gaps, strict=True)):
            offsets = [plan.uniform(0, gap) for _ in range(BATCHES // len(KILLS))]
            if kind == "web":
                offsets[-1] = gap - 0.05  # a create on its way as the worker is killed
            for offset in sorted(offsets):
                creator.start(len(creator.threads), offset)
            time.sleep(gap)
            at, at_clock = utcnow(), time.monotonic()
            now = _rows(app)
            in_flight = {row.id for row in now if row.status == GenerationStatus.PROCESSING}
            waiting = sum(row.status == GenerationStatus.PENDING for row in now)
            what = _kill(kind, fleet, redis_server, creator, chance)
            faults.append(
                {"n": round_number + 1, "kind": kind, "what": what, "at": at,
                 "offset": at_clock - began, "in_flight": in_flight, "waiting": waiting,
                 "back_at": utcnow()}
            )
            print(f"fault {round_number + 1} at {at_clock - began:5.1f} s: {what}")
        for thread in creator.threads:
            thread.join(timeout=150)
        assert creator.errors == []
        assert len(creator.created) == BATCHES

        try:
            wait_until(
                lambda: _terminal(app) == BATCHES * IMAGES and _batches_finished(app),
                SETTLE_SECONDS, "every image and batch to end", interval=0.2,
            )
        except AssertionError:
            unfinished = [row for row in _rows(app) if row.status not in GenerationStatus.TERMINAL]
            raise AssertionError(
                f"seed {seed}: {len(unfinished)} image(s) unfinished {SETTLE_SECONDS} s after the "
                f"last fault: {[(row.id, row.status, row.attempts) for row in unfinished[:10]]}; "
                f"the fleet's logs are in {tmp_path}"
            ) from None
        makespan = time.monotonic() - began
        statuses = _answered_statuses(webs[1], users, creator)
        audit = subprocess.run(
            [str(BIN / "flask"), "--app", "app", "ledger", "audit"],
            cwd=PROJECT_ROOT, env=fleet.environment, capture_output=True, text=True, timeout=60,
        )
        logs = fleet.logs()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        stopping = time.monotonic()
        fleet.stop()
        redis_server.kill_9()
        stub.stop()
        print(f"the fleet stopped in {time.monotonic() - stopping:.1f} s")

    rows = _rows(app)
    generation_ids = {row.id for row in rows}
    tasks = Counter(_generation_of(body) for body in stub.created)
    figures = _figures(seed, faults, rows, tasks, creator, makespan, started_at, logs, stub)
    figures += f"\nledger audit: exit {audit.returncode}, {audit.stdout.strip()}"
    print(figures)
    if ARTIFACTS:
        Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        Path(ARTIFACTS, "chaos.txt").write_text(figures + "\n", encoding="utf-8")

    # None lost: 20 batches of 10, one per Idempotency-Key, every image terminal.
    assert len(rows) == BATCHES * IMAGES
    assert len({answer["batchId"] for answer in creator.created.values()}) == BATCHES
    assert Counter(row.status for row in rows) == {GenerationStatus.SUCCESS: BATCHES * IMAGES}
    assert statuses == {"completed": BATCHES}
    # One upstream task per image: no task paid twice, none made for nothing.
    assert stub.rejected == []
    assert set(tasks) == generation_ids, set(tasks) ^ generation_ids
    assert [g for g, n in tasks.items() if n != 1] == []
    # Each result stored once, in the S3 bucket.
    results = [key for key in s3_place.keys(s3_prefix) if key.startswith("results/")]
    assert len(results) == BATCHES * IMAGES
    # Never a 500: kie's callbacks met at most an outage (503) while the queue was down.
    assert not [c for c in stub.callbacks if c["status"] == 500]
    assert [name for name, text in logs.items() if "unhandled error" in text] == []
    # The money: the operator's audit, and the same rules straight in SQL.
    assert audit.returncode == 0, audit.stdout + audit.stderr
    _assert_money_exact(app, users)


def _batches_finished(app):
    with app.app_context():
        unfinished = db.session.scalar(
            select(func.count()).select_from(Batch).where(
                Batch.status.not_in(BatchStatus.TERMINAL) | Batch.finished_at.is_(None)
            )
        )
        db.session.rollback()
        return unfinished == 0


def _answered_statuses(web, users, creator):
    """Each batch's status as its owner reads it over HTTP."""
    tokens = dict(users)
    found = Counter()
    for number, answer in creator.created.items():
        user_id, _ = users[number % len(users)]
        detail = requests.get(
            f"{web.base_url}/api/generate/batch/{answer['batchId']}",
            headers={"Authorization": f"Bearer {tokens[user_id]}"},
            timeout=30,
        ).json()
        found[detail["status"]] += 1
    return dict(found)


def _generation_of(body):
    """The generation a create was made for, from the callBackUrl that names its attempt."""
    return dict(parse_qsl(urlsplit(body["callBackUrl"]).query))["generation"]


def _assert_money_exact(app, users):
    """What `flask ledger audit` checks, straight in SQL: credits == sum(ledger) for every
    user, one debit per batch, at most one refund per image, refunds only for non-successes."""
    with app.app_context():
        assert billing.ledger_mismatches() == []
        entries = db.session.execute(
            select(LedgerEntry.user_id, LedgerEntry.kind, LedgerEntry.batch_id,
                   LedgerEntry.generation_id, LedgerEntry.amount)
        ).all()
        batches = dict(db.session.execute(select(Batch.id, Batch.user_id)).all())
        succeeded = set(
            db.session.scalars(
                select(Generation.id).where(Generation.status == GenerationStatus.SUCCESS)
            )
        )
        db.session.rollback()
    debits = Counter(e.batch_id for e in entries if e.kind == LedgerKind.BATCH_DEBIT)
    assert debits == Counter(list(batches)), "one debit per batch"
    refunds = Counter(e.generation_id for e in entries if e.kind == LedgerKind.REFUND)
    assert all(n == 1 for n in refunds.values()), "at most one refund per image"
    assert not set(refunds) & succeeded, "refunds only for images that did not succeed"
    assert all(e.amount == PRICE for e in entries if e.kind == LedgerKind.REFUND)
    for user_id, _ in users:
        mine = [batch for batch, owner in batches.items() if owner == user_id]
        assert len(mine) == BATCHES // USERS
        charged = [e.amount for e in entries if e.user_id == user_id and e.kind != "grant"]
        refunded = [e for e in entries if e.user_id == user_id and e.kind == LedgerKind.REFUND]
        assert sum(charged) == -len(mine) * IMAGES * PRICE + PRICE * len(refunded)


def _figures(seed, faults, rows, tasks, creator, makespan, started_at, logs, stub):
    """The run in figures, for the report (and TEST_ARTIFACTS/chaos.txt)."""
    finished = sorted(row.finished_at for row in rows if row.finished_at)
    by_id = {row.id: row for row in rows}
    kinds = Counter(fault["kind"] for fault in faults)
    lines = [
        f"chaos run, seed {seed}: {len(rows)} images in {BATCHES} batches of {USERS} users; "
        f"2 gunicorn x 2 workers, 3 consumers x 4 threads, PostgreSQL, Redis, S3, "
        f"the stub kie.ai ({UPSTREAM_SECONDS} s per image, callbacks)",
        f"faults: {len(faults)} ({kinds['consumer']} consumer kill -9, {kinds['web']} web "
        f"worker kill -9, {kinds['redis']} Redis restarts empty)",
    ]
    resumes, clears = ({kind: [] for kind in kinds} for _ in range(2))
    for fault in faults:
        # Work stops only when the queue is lost: then progress resumes once Redis is back.
        since = fault["back_at"] if fault["kind"] == "redis" else fault["at"]
        after = [moment for moment in finished if moment > since]
        resumed = (after[0] - fault["at"]).total_seconds() if after else float("inf")
        lasted = (fault["back_at"] - fault["at"]).total_seconds()
        ends = [by_id[g].finished_at for g in fault["in_flight"] if by_id[g].finished_at]
        cleared = (max(ends) - fault["at"]).total_seconds() if ends else 0.0
        idle = not fault["in_flight"] and not fault["waiting"]
        if idle:  # nothing to recover: it says nothing of recovery
            lines.append(
                f"  {fault['n']:2}. {fault['offset']:5.1f} s {fault['kind']:8} {fault['what']}; "
                f"replaced or back after {lasted:.1f} s; no image was waiting or processing"
            )
            continue
        resumes[fault["kind"]].append(resumed)
        clears[fault["kind"]].append(cleared)
        lines.append(
            f"  {fault['n']:2}. {fault['offset']:5.1f} s {fault['kind']:8} {fault['what']}; "
            f"replaced or back after {lasted:.1f} s; progress resumed (next image done) after "
            f"{resumed:.1f} s; the {len(fault['in_flight'])} images processing at the fault all "
            f"done after {cleared:.1f} s ({fault['waiting']} waiting)"
        )
    for kind in kinds:
        if not resumes[kind]:
            continue
        lines.append(
            f"recovery after {kind} faults: progress resumed within {_spread(resumes[kind])}; "
            f"the images processing at the fault done within {_spread(clears[kind])}"
        )
    attempts = Counter(row.attempts for row in rows)
    requeued = sum(int(n) for text in logs.values() for n in re.findall(r"requeued (\d+)", text))
    lines += [
        f"makespan: {makespan:.1f} s from the first create to the last image "
        f"({(finished[-1] - started_at).total_seconds():.1f} s by the database)",
        f"upstream tasks per image: {sum(tasks.values()) / len(rows):.2f} "
        f"({sum(tasks.values())} creates, {stub.counts['rate_limited']} 429s, "
        f"{stub.counts['callback']} callbacks, last answers "
        f"{dict(Counter(c['status'] for c in stub.callbacks))})",
        f"attempts per image: {dict(sorted(attempts.items()))}; reaper requeued {requeued}",
        f"creates resent: {len(creator.retried)} of {len(creator.created)}, "
        f"{creator.resends} resends ({dict(creator.answers)}), answered at last after "
        + (", ".join(f"{t:.1f} s" for t in sorted(creator.retried.values())) or "-"),
    ]
    return "\n".join(lines)


def _spread(values):
    return f"{max(values):.1f} s (mean {sum(values) / len(values):.1f} s)"
