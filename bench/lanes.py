"""Benchmark: how much per-batch concurrency buys, through the real API, queue and consumer.

Runs the same batch at concurrency 1, 4 and 8 on a SQLite Huey with 8 consumer threads, with
the local engine made to take LATENCY seconds per image (as an upstream would), and prints the
wall time of each and the speed-up over sequential, measured in this one run.

    .venv/bin/python -m bench.lanes [images] [latency]
"""

import sys
import tempfile
import time
from pathlib import Path

from tests.support import (
    ApiClient,
    batch_body,
    batch_finished,
    create_user,
    make_app,
    running_consumer,
    wait_for,
)


def run(images, latency, concurrency, workdir):
    app = make_app(Path(workdir), HUEY_MEMORY=False, LOCAL_ENGINE_DELAY=latency)
    client = ApiClient(app, *create_user(app, credits=10_000))
    with running_consumer(app, workers=8):
        started = time.perf_counter()
        batch_id = client.post(
            "/api/generate/batch", json=batch_body(images, concurrency=concurrency)
        ).get_json()["batchId"]
        detail = wait_for(batch_finished(client, batch_id), timeout=600, interval=0.05)
        elapsed = time.perf_counter() - started
    assert detail["status"] == "completed", detail["status"]
    return elapsed


def main():
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
    print(f"{images} images, {latency:.2f} s engine latency per image, 8 consumer threads")
    timings = {}
    for concurrency in (1, 4, 8):
        with tempfile.TemporaryDirectory() as workdir:
            timings[concurrency] = run(images, latency, concurrency, workdir)
        ideal = images * latency / concurrency
        print(
            f"concurrency {concurrency}: {timings[concurrency]:6.2f} s "
            f"(ideal {ideal:5.2f} s, speed-up ×{timings[1] / timings[concurrency]:.2f})"
        )


if __name__ == "__main__":
    main()
