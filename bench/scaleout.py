"""Scale-out: images per second with 1, 2 and 4 consumer processes on Redis and PostgreSQL.

The stub kie.ai finishes each task LATENCY seconds after its create and sets no rate limit;
the app's pacer is off too (UPSTREAM_RATE_LIMIT=0), so only the consumers bound the pace.
BATCHES batches of IMAGES small images each, from as many users, are created first with no
consumer running; then the consumers start together. Throughput is the number of images over
the span from the first claim to the last result, both read from the database, so process
start-up does not count. gunicorn takes kie's callbacks, as in production.

    .venv/bin/python -m bench scaleout
"""

import os
import time
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import func, select

from devtools.kie_stub import KieStub

from .harness import (
    Api,
    Deployment,
    Result,
    Section,
    free_port,
    image_data_url,
    kie_settings,
    wait_until,
)
from .machine import cpu_seconds, machine_busy_seconds

CONSUMERS = (1, 2, 4)
WORKERS = 8  # threads per consumer process
BATCHES = 8
IMAGES = 40
LATENCY = 0.2


def run_once(workdir, consumers):
    """One run with `consumers` processes."""
    port = free_port()
    with KieStub(latency=LATENCY, polls_until_done=0) as stub:
        settings = kie_settings(stub, port, UPSTREAM_RATE_LIMIT=0, MAX_CONCURRENCY=WORKERS)
        with Deployment(workdir, database="postgresql", queue="redis", **settings) as app:
            base_url, _ = app.web(workers=2, threads=8, port=port)
            pictures = [{"id": f"p{i}", "data": image_data_url((64, 64), seed=i)}
                        for i in range(IMAGES)]
            for _ in range(BATCHES):
                api = Api(base_url, app.user()[1])
                answer = api.post("/api/generate/batch", {
                    "prompt": "Add white background", "model": "flux-2",
                    "images": pictures, "concurrency": WORKERS,
                })
                answer.raise_for_status()
            busy_before, clock = machine_busy_seconds(), time.perf_counter()
            # One reaper is plenty; the others only work.
            workers = [
                app.consumer(workers=WORKERS, periodic=number == 0, name=f"consumer-{number}")
                for number in range(consumers)
            ]
            total = BATCHES * IMAGES
            wait_until(lambda: _finished(app) == total, 300, 0.2, "every image")
            cores_busy = (machine_busy_seconds() - busy_before) / (time.perf_counter() - clock)
            cpu = sum(cpu_seconds(worker.pid) for worker in workers)
            first, last, failures = _span(app)
    seconds = (last - first).total_seconds()
    return Run(total / seconds, seconds, failures, cpu / total, cores_busy)


class Run(NamedTuple):
    rate: float  # images per second
    seconds: float
    failures: int
    consumer_cpu: float  # CPU seconds the consumers spent per image (start-up included)
    cores_busy: float  # how many of the machine's cores were busy on average, all processes


def _finished(app):
    from webapp.extensions import db
    from webapp.models import Generation

    with app.app.app_context():
        count = db.session.scalar(
            select(func.count()).where(Generation.finished_at.is_not(None))
        )
        db.session.rollback()
        return count


def _span(app):
    from webapp.extensions import db
    from webapp.models import Generation

    with app.app.app_context():
        first, last, failures = db.session.execute(
            select(
                func.min(Generation.started_at),
                func.max(Generation.finished_at),
                func.count().filter(Generation.status != "success"),
            )
        ).one()
        db.session.rollback()
        return first, last, failures


def run(workdir):
    section = Section(
        "Scale-out",
        f"The stub kie.ai finishes each task {LATENCY:g} s after its create, with no rate "
        f"limit, and the app's pacer is off. {BATCHES} users each create a batch of {IMAGES} "
        f"64×64 images at concurrency {WORKERS} while no consumer runs; then 1, 2 or 4 "
        f"`huey_consumer` processes ({WORKERS} threads each) start on Redis and PostgreSQL, "
        "with gunicorn taking kie's callbacks. Throughput is images over the span from the "
        "first claim to the last result, both read from the database.",
    )
    runs = {}
    for consumers in CONSUMERS:
        runs[consumers] = run = run_once(Path(workdir) / f"n{consumers}", consumers)
        section.results.append(
            Result(
                "scaleout",
                f"{consumers} consumer{'s' if consumers > 1 else ''}: throughput / one consumer's",
                run.rate / runs[1].rate,
                "",
                f"{run.rate:.1f} images/s ({BATCHES * IMAGES} images in {run.seconds:.1f} s, "
                f"{run.failures} not successful); {run.consumer_cpu * 1000:.0f} ms of consumer "
                f"CPU per image; {run.cores_busy:.1f} of {os.cpu_count()} cores busy",
            )
        )
        time.sleep(0.5)
    cores = os.cpu_count()
    one = runs[CONSUMERS[0]]
    section.notes.append(
        f"- Everything runs on this machine's {cores} cores: the stub kie.ai, gunicorn, "
        f"PostgreSQL and Redis beside the consumers. One consumer (a single GIL, "
        f"{one.consumer_cpu * one.rate:.1f} cores' worth of its own CPU) already keeps "
        f"{one.cores_busy:.1f} of them busy, so more processes can only add what is left, and "
        "they start to cost each other: the consumers' CPU per image rises with their number. "
        "On hosts of their own, consumers add what their host adds."
    )
    return section
