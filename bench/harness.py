"""What the benchmarks share: a deployment of the app as ops run it (gunicorn, `huey_consumer`
processes, SQLite or PostgreSQL, Redis or SqliteHuey), users with tokens, and the results.

Every benchmark builds a `Deployment` in a temporary folder of its own, so nothing touches
`instance/`. Its settings are environment variables, exactly what ops would export; the same
settings also build an app in this process, which makes the schema and the users and reads the
database afterwards. The Redis queue lives in database BENCH_REDIS_DB (default 2, far below the
tests' 15 minus the worker's number, which they flush) under a queue name of the run's own, so a
benchmark never meets the test suite's queues.
"""

import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DB', '2')}"
)
# The web's worker as the README runs it (deploy/gunicorn.conf.py): `Deployment.web(extra=GEVENT)`.
GEVENT = ("-k", "gevent", "--worker-connections", "2000")
POSTGRES_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Result:
    """One figure of a benchmark: a measured ratio against its target, with the raw numbers
    it came from (`detail`, in words) for the report."""

    benchmark: str
    figure: str
    ratio: float | None
    target: str = ""  # "≤ 1.10", "≥ 0.5", or "" for a figure that is only reported
    detail: str = ""

    @property
    def met(self):
        if not self.target or self.ratio is None:
            return None
        sign, bound = self.target.split()
        bound = float(bound)
        return self.ratio <= bound if sign == "≤" else self.ratio >= bound


@dataclass
class Section:
    """A benchmark's part of the report: what it did, its figures, and any extra lines."""

    title: str
    method: str
    results: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    points: list = field(default_factory=list)  # (x, measured, ideal) for a plot, if any
    seconds: float = 0.0
    failed: bool = False  # it raised instead of measuring


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout, interval=0.05, what="a condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"gave up after {timeout:.0f} s waiting for {what}")


class PostgresSchema:
    """An empty schema of its own on the local PostgreSQL, dropped afterwards."""

    def __init__(self):
        from tests.postgres import PostgresServer

        self.server = PostgresServer(POSTGRES_URL)
        self.name, self.url = self.server.create_schema()

    def drop(self):
        self.server.drop_schema(self.name)
        self.server.close()


class Deployment:
    """One installation of the app under `workdir`: its settings, as environment variables."""

    def __init__(self, workdir, database="sqlite", queue="redis", **settings):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.schema = PostgresSchema() if database == "postgresql" else None
        database_url = self.schema.url if self.schema else f"sqlite:///{self.workdir / 'app.db'}"
        self.env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": REDIS_URL if queue == "redis" else "",
            "HUEY_NAME": f"bench-{os.getpid()}-{secrets.token_hex(3)}",
            "MEDIA_ROOT": str(self.workdir / "media"),
            "INSTANCE_PATH": str(self.workdir),
            "SECRET_KEY": "bench-secret",
            **{name: str(value) for name, value in settings.items()},
        }
        self.processes = []
        self.web_masters = set()
        self.app = self._build_app()

    def _build_app(self):
        from webapp import create_app
        from webapp.config import from_environment

        config = from_environment(self.env)
        if not self.env["REDIS_URL"]:
            config["REDIS_URL"] = None
            config["HUEY_SQLITE_PATH"] = str(self.workdir / "huey.db")
        app = create_app(config, instance_path=str(self.workdir))
        with app.app_context():
            from webapp.schema import upgrade_to_head

            upgrade_to_head()
        return app

    def process_env(self):
        environment = {**os.environ, **self.env}
        if not self.env["REDIS_URL"]:
            environment.pop("REDIS_URL", None)
        return environment

    def user(self, credits=100_000, name=None):
        """A user with `credits` granted through the ledger; answers (user_id, Bearer token)."""
        from webapp import billing
        from webapp.auth import create_token
        from webapp.extensions import db
        from webapp.models import User

        with self.app.app_context():
            user = User(name=name or f"bench-{secrets.token_hex(3)}")
            db.session.add(user)
            db.session.flush()
            billing.grant(user.id, credits)
            token = create_token(user.id)
            db.session.commit()
            return user.id, token

    def start(self, arguments, log_name):
        """Start one of the app's processes (its own process group), logging to workdir."""
        log = open(self.workdir / f"{log_name}.log", "ab")
        process = subprocess.Popen(
            arguments,
            cwd=PROJECT_ROOT,
            env=self.process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.processes.append(process)
        return process

    def web(self, workers=2, threads=8, port=None, extra=(), app="app:app", ready="/api/models"):
        """`gunicorn app:app` (or another WSGI `app`) on 127.0.0.1; answers (base URL, master)
        once `ready` answers 200."""
        port = port or free_port()
        arguments = [
            str(BIN / "gunicorn"),
            "-k",
            "gthread" if threads > 1 else "sync",
            "-w",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "300",
            "-b",
            f"127.0.0.1:{port}",
            *extra,
            app,
        ]
        process = self.start(arguments, f"gunicorn-{port}")
        self.web_masters.add(process.pid)
        base_url = f"http://127.0.0.1:{port}"

        def serving():
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.workdir}/gunicorn-{port}.log")
            try:
                return requests.get(base_url + ready, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(serving, 60, what=f"gunicorn {app}")
        return base_url, process

    def consumer(self, workers=8, worker_type="thread", periodic=True, name="consumer"):
        """`huey_consumer app.huey`, as ops run it."""
        arguments = [str(BIN / "huey_consumer"), "app.huey", "-k", worker_type, "-w", str(workers)]
        if not periodic:
            arguments.append("--no-periodic")
        return self.start(arguments, name)

    def stop(self):
        """Stop every process: gunicorn with SIGTERM to its master (SIGINT to the whole group
        sometimes leaves a gthread worker stuck at exit), consumers with SIGINT to their group
        (they finish the task in hand); whatever is still up after 20 s is killed."""
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if process.pid in self.web_masters:
                        process.terminate()
                    else:
                        os.killpg(process.pid, signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        with self.app.app_context():
            from webapp.extensions import db

            db.engine.dispose()
        if self.env["REDIS_URL"]:
            import redis

            client = redis.Redis.from_url(self.env["REDIS_URL"])
            keys = list(client.scan_iter(f"*{self.env['HUEY_NAME']}*"))
            if keys:
                client.delete(*keys)
            client.close()
        if self.schema:
            self.schema.drop()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()


class Api:
    """A user's view of the JSON API over HTTP, as the generator client sends it."""

    def __init__(self, base_url, token):
        self.base_url = base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def post(self, path, body, **kwargs):
        return self.http.post(self.base_url + path, json=body, timeout=600, **kwargs)

    def get(self, path, **kwargs):
        return self.http.get(self.base_url + path, timeout=60, **kwargs)

    def wait_for_batch(self, batch_id, timeout=600, interval=0.05):
        """Poll the batch until it is finished; answers its detail and the moment it was seen."""

        def finished():
            detail = self.get(f"/api/generate/batch/{batch_id}").json()
            return detail if detail["isComplete"] and detail["finishedAt"] else None

        detail = wait_until(finished, timeout, interval, what=f"batch {batch_id}")
        return detail, time.perf_counter()


def image_data_url(size=(256, 256), seed=0):
    """A real PNG as a data URL: a gradient, so every image differs (and compresses like one)."""
    import io

    from PIL import Image

    width, height = size
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.putpixel((seed % width, (seed // width) % height), (255, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def kie_settings(stub, port, **settings):
    """The settings of a deployment whose kie engine is the stub `stub`, with kie's callbacks
    coming back to the gunicorn on `port`."""
    return {
        "GENERATION_BACKEND": "kie",
        "KIE_API_KEY": stub.api_key,
        "KIE_API_BASE": stub.base_url,
        "KIE_UPLOAD_BASE": stub.base_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        **settings,
    }
