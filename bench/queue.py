"""Queue overhead: how many generations per second one consumer pushes through when the image
engine takes no time, next to a bare Huey no-op task on the same queue storage.

For each setup (SQLite + SqliteHuey, the embedded default; PostgreSQL + RedisHuey, the
multi-machine one) the batches are created first, through the JSON API in this process, while
no consumer runs; then one `huey_consumer` starts (the app's, with an engine that answers every
image at once: see bench/queue_app.py) and the bench watches the database until every
generation is terminal. The reference is the same number of no-op tasks, enqueued first, then
run by one consumer of the same worker type and count (bench/noop_queue.py). Both clocks run
from the first completion the bench sees to the last, so process start-up is left out of both
(and reported apart).

    .venv/bin/python -m bench queue
"""

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from . import noop_queue
from .harness import BIN, Deployment, Result, Section, image_data_url

BATCHES = 40
IMAGES = 50  # per batch: BATCHES × IMAGES = 2,000 generations
CONCURRENCY = 8  # the default MAX_CONCURRENCY: 8 lanes per batch
WORKERS = 8  # consumer threads, as the README's Operations section runs a consumer
WORKER_TYPE = "thread"
POLL_INTERVAL = 0.01
TIMEOUT = 120
# What profiling this benchmark changed in the app (both changes together, measured in
# alternating runs with and without them on the shared 2-core machine).
CHANGES = (
    "- Profiled with py-spy (`record --gil` on the app's consumer). The largest single cost "
    "was `claim_for_batch` making two new `aliased(Generation)` per claim: SQLAlchemy copies "
    "every column of the table for each new alias. webapp/generation/claims.py now makes them "
    "once. In four runs each way, the consumer's CPU per generation fell from 10.0–13.4 to "
    "6.5–7.3 ms on SQLite and from 11.8–13.6 to 7.8–9.2 ms on PostgreSQL; generations/s rose "
    "from 59–104 to 118–141 on SQLite and from 55–68 to 72–90 on PostgreSQL. Also, a claim "
    "re-read its row by lease token alone, which has no index, so every generation ever made "
    "was read; it now also names the batch (or the id), which is indexed. No change at 2,000 "
    "rows, but with 200,000 older generations that read took 27–33 ms on SQLite and 24 ms on "
    "PostgreSQL, against 0.5–0.8 ms now."
)
SETUPS = (
    ("SQLite + SqliteHuey", "sqlite", "sqlite"),
    ("PostgreSQL + RedisHuey", "postgresql", "redis"),
)


def consumer(deployment, target, name):
    arguments = [str(BIN / "huey_consumer"), target, "-k", WORKER_TYPE, "-w", str(WORKERS)]
    return deployment.start(arguments, name)


def stop(process):
    """SIGINT: the consumer finishes what it holds and exits."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def cpu_seconds(pid):
    """CPU time (user + system, all its threads) a process has used so far, from Linux's /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """What one consumer did, counted from the first completion the bench saw to the last."""

    startup: float  # seconds from the consumer's start to the first completion seen
    counted: int  # completions after that one
    seconds: float
    cpu_each: float  # the consumer's CPU seconds per completion counted

    @property
    def rate(self):
        return self.counted / self.seconds


def watch(count, total, process, log):
    """Poll a completion count until it reaches `total`; answers the Run. Its clock starts at
    the first completion seen, so the consumer's start-up is not in it. The consumer's CPU time
    is kept too: it hardly depends on what else the machine is running."""
    started = time.perf_counter()
    first = None
    while True:
        done = count()
        now = time.perf_counter()
        if done and first is None:
            first = (now, done, cpu_seconds(process.pid))
        if done >= total:
            break
        if process.poll() is not None:
            raise RuntimeError(f"the consumer exited; see {log}")
        if now - started > TIMEOUT:
            raise TimeoutError(f"{done}/{total} done after {TIMEOUT} s; see {log}")
        time.sleep(POLL_INTERVAL)
    seen, done_then, cpu_then = first
    counted = total - done_then
    cpu_each = (cpu_seconds(process.pid) - cpu_then) / counted
    return Run(seen - started, counted, now - seen, cpu_each)


def executed_tasks(log):
    """How many tasks the consumer ran, from its log (Huey logs every one at INFO)."""
    return len(re.findall(r" executed in ", log.read_text()))


def create_batches(deployment, token):
    """BATCHES batches of IMAGES tiny PNGs each, through the JSON API (which rings their lanes
    on the queue: the consumer finds them waiting)."""
    client = deployment.app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for number in range(BATCHES):
        images = [
            {"id": f"b{number}-{i}", "data": image_data_url(size=(8, 8), seed=i)}
            for i in range(IMAGES)
        ]
        body = {
            "prompt": "Add white background",
            "model": "flux-2",
            "quality": "1k",
            "aspectRatio": "1:1",
            "concurrency": CONCURRENCY,
            "images": images,
        }
        answer = client.post("/api/generate/batch", json=body, headers=headers)
        assert answer.status_code == 200, answer.get_data(as_text=True)


def terminal_count(app):
    from webapp.extensions import db
    from webapp.models import Generation, GenerationStatus

    def count():
        with app.app_context():
            return db.session.scalar(
                select(func.count()).where(Generation.status.in_(GenerationStatus.TERMINAL))
            )

    return count


def outcome(app):
    """({generation status: count}, {batch status: count}) once the run is over."""
    from webapp.extensions import db
    from webapp.models import Batch, Generation

    with app.app_context():
        generations = dict(
            db.session.execute(
                select(Generation.status, func.count()).group_by(Generation.status)
            ).all()
        )
        batches = dict(
            db.session.execute(select(Batch.status, func.count()).group_by(Batch.status)).all()
        )
    return generations, batches


def run_app(deployment):
    """Create the batches, then run them through one app consumer; answers (Run, facts)."""
    _, token = deployment.user()
    started = time.perf_counter()
    create_batches(deployment, token)
    created = time.perf_counter() - started
    total = BATCHES * IMAGES
    process = consumer(deployment, "bench.queue_app.huey", "app-consumer")
    log = deployment.workdir / "app-consumer.log"
    run = watch(terminal_count(deployment.app), total, process, log)
    stop(process)
    generations, batches = outcome(deployment.app)
    assert generations == {"success": total}, generations
    assert batches == {"completed": BATCHES}, batches
    return run, {"created": created, "tasks": executed_tasks(log)}


def run_noop(deployment):
    """Enqueue as many no-ops, then run them through one consumer; answers its Run."""
    environ = deployment.process_env()
    _, noop = noop_queue.create(environ)
    total = BATCHES * IMAGES
    for _ in range(total):
        noop()
    counter = Path(noop_queue.counter_path(environ))
    process = consumer(deployment, "bench.noop_queue.huey", "noop-consumer")
    log = deployment.workdir / "noop-consumer.log"
    run = watch(lambda: counter.stat().st_size, total, process, log)
    stop(process)
    assert counter.stat().st_size == total, counter.stat().st_size
    assert executed_tasks(log) == total
    return run


def local_engine_ms():
    """CPU milliseconds the local engine (LOCAL_ENGINE_DELAY=0) spends on one 8×8 input at 1k."""
    import base64

    from webapp.providers.imaging import render

    data = base64.b64decode(image_data_url(size=(8, 8)).split(",", 1)[1])
    started = time.process_time()
    for _ in range(10):
        render(data, "Add white background", "1k", "1:1")
    return (time.process_time() - started) * 100


def measure(workdir, label, database, queue):
    """One setup: the app's generations/s and the no-op's tasks/s; answers (Result, notes)."""
    with Deployment(workdir, database=database, queue=queue, MAX_CONCURRENCY=CONCURRENCY) as dep:
        generations, facts = run_app(dep)
        noops = run_noop(dep)
    result = Result(
        "queue",
        f"{label}: generations/s ÷ no-op tasks/s",
        generations.rate / noops.rate,
        "",
        f"{generations.rate:.1f} generations/s ({generations.counted} in "
        f"{generations.seconds:.2f} s) against {noops.rate:.0f} no-op tasks/s "
        f"({noops.counted} in {noops.seconds:.2f} s)",
    )
    notes = [
        f"- {label}: the consumer's CPU time was {generations.cpu_each * 1000:.2f} ms per "
        f"generation against {noops.cpu_each * 1000:.2f} ms per no-op (÷ "
        f"{generations.cpu_each / noops.cpu_each:.1f}). When the last generation was done it "
        f"had run {facts['tasks']} tasks: {BATCHES * IMAGES} lane turns that each did one, "
        "the rest lane turns that found nothing to claim (a lane's last) and the reaper. First "
        f"completion {generations.startup:.2f} s after the consumer started (no-op: "
        f"{noops.startup:.2f} s); creating the batches took {facts['created']:.1f} s; neither "
        "is on the clock."
    ]
    return result, notes, generations


def run(workdir):
    total = BATCHES * IMAGES
    section = Section(
        "Queue overhead",
        f"{total:,} generations ({BATCHES} batches of {IMAGES} 8×8 PNGs at concurrency "
        f"{CONCURRENCY}) are created through the JSON API while no consumer runs. Then one "
        f"`huey_consumer` with {WORKERS} {WORKER_TYPE} workers runs the app's tasks with an "
        "engine that takes no time (it answers each image with its input), and the bench "
        f"counts the finished generations in the database every {POLL_INTERVAL * 1000:.0f} ms. "
        f"The reference is {total:,} bare Huey no-op tasks on the same storage (each appends "
        "one byte to a file, which is how they are counted), enqueued first, then run by one "
        "consumer with the same workers. Each rate runs from the first completion seen to the "
        "last, so start-up is left out of both. The figure is generations/s ÷ no-op tasks/s, "
        "for SQLite with SqliteHuey and for PostgreSQL with RedisHuey.",
    )
    section.notes.append(
        f"- {WORKERS} {WORKER_TYPE} workers in both consumers: how the README runs one "
        f"(`-k thread -w 8`), and as many as one batch's lanes at concurrency {CONCURRENCY}."
    )
    cpu_each = []
    for number, (label, database, queue) in enumerate(SETUPS):
        result, notes, generations = measure(
            Path(workdir) / f"setup{number}", label, database, queue
        )
        section.results.append(result)
        section.notes.extend(notes)
        cpu_each.append(generations.cpu_each)
    section.notes.append(
        f"- Why not the local engine at LOCAL_ENGINE_DELAY=0: it scales every result to 1024 px "
        f"and encodes a PNG, {local_engine_ms():.0f} ms of CPU per image here even from an "
        f"8×8 input, against {min(cpu_each) * 1000:.1f}–{max(cpu_each) * 1000:.1f} ms for all "
        "the rest of a generation: the figure would measure Pillow. bench/queue_app.py runs "
        "the app's own consumer (`app.huey`, every task and the reaper) with the local engine's "
        "image work taken out."
    )
    section.notes.append(CHANGES)
    return section
