"""Events: a thousand viewers of one running batch's event stream under gunicorn's gevent
worker, as ops run it (README, Serving).

The stub kie.ai finishes each task 1 s after its create and accepts 20 creates in any 10 s.
gunicorn (`-k gevent --worker-connections 2000 -w 2`), one `huey_consumer` on Redis and
PostgreSQL run the kie engine against it, with callbacks. A batch of 50 images at concurrency
10 is created while no consumer runs; the load generator (bench/sse_viewers.py, a process of
its own) opens VIEWERS streams of it, and once every viewer has its first snapshot the consumer
starts. Every viewer must receive every image's terminal event and the `batch` event.

The delay of an image's terminal event is its receipt by a viewer (the load generator's clock)
minus the image's `finished_at` in the database (the consumer's clock, set in the transaction
that commits the outcome, a little before the commit): the same machine's clock, so the
figure holds no skew, and it counts the commit itself. The `batch` event's is measured from the
batch's `finished_at` likewise. The web's RSS is the workers' (VmRSS, summed) with every stream
open less before any; its CPU is the workers' user + system time from the first stream opened
to the last one ended.

    .venv/bin/python -m bench events
"""

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from devtools.kie_stub import KieStub

from .harness import Api, Deployment, Result, Section, free_port, image_data_url, kie_settings

VIEWERS = 1000
IMAGES = 50
CONCURRENCY = 10
LATENCY = 1.0
RATE_LIMIT = (20, 10)
WORKERS = 2
WORKER_CONNECTIONS = 2000
RUN_SECONDS = 150.0  # the load generator's whole bound
GEVENT = ("-k", "gevent", "--worker-connections", str(WORKER_CONNECTIONS))
# Opening a stream counts as a poll (STATUS_RATE_LIMIT, 20 per second per user), and the
# thousand viewers are one user's: the limit is set so high it never binds (it still counts).
LIMITS = {"STATUS_RATE_LIMIT": "1000000000 per second"}


def worker_pids(master):
    children = Path(f"/proc/{master}/task/{master}/children")
    return [int(pid) for pid in children.read_text().split()]


def rss_bytes(pids):
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids):
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def finished_times(app, batch_id):
    """{generation id: finished_at as a POSIX time} and the batch's, from the database."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Batch, Generation

    def posix(moment):
        return moment.replace(tzinfo=UTC).timestamp()

    with app.app_context():
        rows = db.session.execute(
            select(Generation.id, Generation.finished_at).where(Generation.batch_id == batch_id)
        ).all()
        batch = db.session.get(Batch, batch_id)
        return {row.id: posix(row.finished_at) for row in rows}, posix(batch.finished_at)


def measure(workdir, viewers=VIEWERS):
    """One run; answers the figures it measured, in a dict."""
    port = free_port()
    with KieStub(latency=LATENCY, polls_until_done=0, rate_limit=RATE_LIMIT) as stub:
        settings = kie_settings(
            stub,
            port,
            UPSTREAM_RATE_LIMIT=RATE_LIMIT[0],
            UPSTREAM_RATE_PERIOD=RATE_LIMIT[1],
            MAX_CONCURRENCY=CONCURRENCY,
            **LIMITS,
        )
        with Deployment(workdir, database="postgresql", queue="redis", **settings) as app:
            _, token = app.user()
            base_url, master = app.web(workers=WORKERS, port=port, extra=GEVENT)
            api = Api(base_url, token)
            pictures = [{"id": f"p{i}", "data": image_data_url(seed=i)} for i in range(IMAGES)]
            answer = api.post(
                "/api/generate/batch",
                {"prompt": "Add white background", "model": "flux-2", "images": pictures,
                 "concurrency": CONCURRENCY},
            )
            answer.raise_for_status()
            batch_id = answer.json()["batchId"]
            workers = worker_pids(master.pid)
            rss_before = rss_bytes(workers)
            out = Path(workdir) / "viewers.json"
            load = subprocess.Popen(
                [sys.executable, "-m", "bench.sse_viewers", base_url, token, batch_id,
                 "--viewers", str(viewers), "--seconds", str(RUN_SECONDS), "--out", str(out)],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                cpu_start = cpu_seconds(workers)
                opening = time.perf_counter()
                line = load.stdout.readline().strip()
                if line != "opened":
                    raise RuntimeError(f"the load generator said {line!r} instead of 'opened'")
                opened_in = time.perf_counter() - opening
                rss_open = rss_bytes(workers)
                app.consumer(workers=2 * CONCURRENCY)
                load.wait(timeout=RUN_SECONDS + 30)
                cpu = cpu_seconds(workers) - cpu_start
                rss_end = rss_bytes(workers)
            finally:
                if load.poll() is None:
                    load.kill()
                    load.wait()
            if load.returncode != 0:
                raise RuntimeError(f"the load generator exited {load.returncode}")
            load_report = json.loads(out.read_text())
            images, batch_done = finished_times(app.app, batch_id)
            return summarize(load_report["viewers"], images, batch_done, stub) | {
                "load_cpu": load_report["cpu"],
                "viewers": viewers,
                "opened_in": opened_in,
                "rss_before": rss_before,
                "rss_open": rss_open,
                "rss_end": rss_end,
                "cpu": cpu,
                "workers": len(workers),
            }


def summarize(records, images, batch_done, stub):
    complete, errors, delays, batch_delays, events = 0, [], [], [], 0
    for record in records:
        events += record["events"]
        if record["error"]:
            errors.append(record["error"])
        got = record["terminal"]
        if set(got) | set(record["terminal_at_open"]) == set(images) and record["batch"]:
            complete += 1
        delays += [got[image] - images[image] for image in got if image in images]
        if record["batch"]:
            batch_delays.append(record["batch"] - batch_done)
    # Each image's first receipt by any viewer: the server's part of the delay, before the
    # fan-out to the rest (and the load generator's own queue) adds to it.
    firsts = [
        min(record["terminal"][image] for record in records if image in record["terminal"])
        - done
        for image, done in images.items()
        if any(image in record["terminal"] for record in records)
    ]
    return {
        "firsts": firsts,
        "complete": complete,
        "errors": errors,
        "delays": delays,
        "batch_delays": batch_delays,
        "events": events,
        "created": stub.counts["create"],
    }


def run(workdir, viewers=VIEWERS):
    section = Section(
        "Events: concurrent SSE viewers",
        f"The stub kie.ai finishes each task {LATENCY:g} s after its create and accepts "
        f"{RATE_LIMIT[0]} creates in any {RATE_LIMIT[1]} s. gunicorn with the gevent worker "
        f"(`-k gevent --worker-connections {WORKER_CONNECTIONS} -w {WORKERS}`, as the README "
        "runs it), one `huey_consumer` on Redis and PostgreSQL run the kie engine against it, "
        f"with callbacks. A batch of {IMAGES} images at concurrency {CONCURRENCY} is created "
        f"while no consumer runs; a load generator of its own (bench/sse_viewers.py, aiohttp, "
        f"one asyncio loop) opens {viewers} event streams of it on 127.0.0.1, and once every "
        "viewer has its first snapshot the consumer starts. The delay of an image's terminal "
        "event is the moment a viewer read it (the load generator's clock) minus the image's "
        "`finished_at` in the database (the consumer's clock, set just before its commit): one "
        "machine, one clock. The `batch` event's is measured from the batch's `finished_at`. "
        "RSS is the gunicorn workers' (VmRSS, summed) with every stream open, less before any; "
        "CPU is the workers' user + system time from the first stream opened to the last "
        "ended, over the viewers.",
    )
    load_before = os.getloadavg()[0]
    figures = measure(Path(workdir), viewers)
    load_after = os.getloadavg()[0]
    n = figures["viewers"]
    delays, batch_delays = figures["delays"], figures["batch_delays"]
    section.results.append(
        Result(
            "events",
            "viewers that got every image's terminal event and the batch event / viewers",
            figures["complete"] / n,
            "≥ 1.0",
            f"{figures['complete']} of {n}; {len(figures['errors'])} streams failed"
            + (f" (first: {figures['errors'][0]})" if figures["errors"] else "")
            + f"; {figures['events']:,} events read; all {n} open in "
            f"{figures['opened_in']:.1f} s",
        )
    )
    if delays:
        p50, p95, worst = (percentile(delays, q) for q in (0.50, 0.95, 1.0))
        section.results.append(
            Result(
                "events",
                "p95 delay, an image's commit → a viewer's receipt (s)",
                p95,
                "≤ 1.0",
                f"{len(delays):,} terminal events: p50 {p50:.2f} s, p95 {p95:.2f} s, max "
                f"{worst:.2f} s; the batch event: p95 "
                f"{percentile(batch_delays, 0.95):.2f} s, max {max(batch_delays):.2f} s",
            )
        )
        firsts = figures["firsts"]
        section.results.append(
            Result(
                "events",
                "p95 delay, an image's commit → its first viewer's receipt (s)",
                percentile(firsts, 0.95),
                "",
                f"{len(firsts)} images: p50 {percentile(firsts, 0.5):.2f} s, max "
                f"{max(firsts):.2f} s; the rest is the fan-out to the other viewers",
            )
        )
    rss_per = (figures["rss_open"] - figures["rss_before"]) / n
    section.results.append(
        Result(
            "events",
            "web RSS per open stream (KiB)",
            rss_per / 1024,
            "",
            f"{figures['workers']} workers: {figures['rss_before'] / 2**20:.0f} MB before, "
            f"{figures['rss_open'] / 2**20:.0f} MB with {n} streams open, "
            f"{figures['rss_end'] / 2**20:.0f} MB after",
        )
    )
    section.results.append(
        Result(
            "events",
            "web CPU per viewer over the batch (ms)",
            figures["cpu"] / n * 1000,
            "",
            f"{figures['cpu']:.1f} s of the workers' CPU for {n} viewers of {IMAGES} images "
            f"({figures['cpu'] / max(1, figures['events']) * 1e6:.0f} µs per event sent); the load "
            f"generator used {figures['load_cpu']:.1f} s",
        )
    )
    section.notes.append(
        f"- The machine's load average (1 min) was {load_before:.1f} before the run and "
        f"{load_after:.1f} after, on {os.cpu_count()} cores: everything here (the stub, "
        "PostgreSQL, Redis, the consumer, the web, the load generator, and whatever else the "
        "machine ran meanwhile) shares them, and a delay is mostly time spent waiting for one."
    )
    section.notes.append(
        "- An image's event waits for the next read of its batch, at most one per "
        "EVENTS_COALESCE_SECONDS (0.5 s) in each web process, and each of the two workers "
        "reads on its own; then the worker writes it to each of its streams in turn, on one "
        "core, while the load generator reads a thousand sockets on another."
    )
    return section


if __name__ == "__main__":
    # `python -m bench.events [VIEWERS [FOLDER]]`: one run, its logs kept in FOLDER if given.
    import tempfile

    count = int(sys.argv[1]) if len(sys.argv) > 1 else VIEWERS
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batchgen-events-") as folder:
        result = run(sys.argv[2] if len(sys.argv) > 2 else folder, count)
    result.seconds = time.perf_counter() - started
    for item in result.results:
        print(f"{item.figure}: {item.ratio:.3f} ({item.target}) {item.detail}")
    # The section as BENCHMARKS.md has it (make bench writes it with the others).
    from .report import write_report

    print(write_report([result], {}, datetime.now(UTC), result.seconds, None))
