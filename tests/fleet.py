"""A fleet of the app's processes on one machine, as ops run them on many, for the chaos run:
gunicorn web servers, `huey_consumer` processes (tests/consumers.py), and a Redis server of the
fleet's own, which can be killed and started again empty without touching the shared Redis.

Every process gets the same settings as environment variables, exactly what ops would export;
the test's own app (make_app) is built on the same database, queue and storage, and reads the
database afterwards.
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import requests

from tests.consumers import PROJECT_ROOT, ConsumerProcess

__all__ = ["BIN", "PROJECT_ROOT", "REDIS_SERVER", "Fleet", "RedisServer", "WebServer", "wait_until"]
from tests.support import free_port

BIN = Path(sys.executable).parent
REDIS_SERVER = "/usr/bin/redis-server"


def wait_until(predicate, timeout, what, interval=0.05):
    """Poll `predicate` until it answers something truthy; raise, naming `what`, after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")


class RedisServer:
    """`redis-server` on a free port of 127.0.0.1, with no persistence: a restart is empty."""

    def __init__(self, workdir, port=None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = Path(workdir) / "redis.log"
        self.process = None

    def start(self):
        arguments = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
        ]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self.answers, 30, f"redis-server on port {self.port}")
        return self

    def answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited; see {self.log_path}")
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return client.ping()
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill_9(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart_empty(self, down_seconds=0.0):
        """kill -9, stay down `down_seconds`, start a fresh server on the same port: every key
        (the queue, the schedule, the pacer's log) is gone."""
        self.kill_9()
        time.sleep(down_seconds)
        self.start()

    def keys(self):
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return client.dbsize()
        finally:
            client.close()


class WebServer:
    """`gunicorn app:app` on 127.0.0.1 (a master and its workers); kill -9 a worker and the
    master starts another."""

    def __init__(self, environment, log_path, workers=2, threads=4, port=None):
        self.environment = environment
        self.log_path = log_path
        self.workers = workers
        self.threads = threads
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self):
        arguments = [
            str(BIN / "gunicorn"),
            "-k", "gthread",
            "-w", str(self.workers),
            "--threads", str(self.threads),
            "--timeout", "120",
            "--graceful-timeout", "5",
            "-b", f"127.0.0.1:{self.port}",
            "app:app",
        ]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                arguments,
                cwd=PROJECT_ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self.ready, 90, f"gunicorn on port {self.port}", interval=0.2)
        return self

    def ready(self):
        """It answers, with all its workers booted."""
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited; see {self.log_path}")
        try:
            answered = requests.get(f"{self.base_url}/api/models", timeout=2).ok
        except requests.RequestException:
            return False
        return answered and len(self.worker_pids()) == self.workers

    def worker_pids(self):
        """The master's worker processes now."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def kill_worker(self, rng):
        """kill -9 one worker chosen by `rng`; answers its pid."""
        pid = rng.choice(sorted(self.worker_pids()))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return pid

    def replaced(self, killed_pid):
        """The master has started a worker in place of `killed_pid`."""
        pids = self.worker_pids()
        return killed_pid not in pids and len(pids) == self.workers

    def stop(self):
        """SIGTERM to the master (SIGINT to the whole group can leave a gthread worker stuck
        at exit); the group is killed if it is still up after 20 s."""
        self.terminate()
        self.wait()

    def terminate(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, timeout=20):
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


class Fleet:
    """Web servers and consumers of one app's settings, each logging under `workdir`."""

    def __init__(self, app, workdir, **settings):
        self.app = app
        self.workdir = Path(workdir)
        self.settings = {name: str(value) for name, value in settings.items()}
        config = app.config
        self.environment = {
            **os.environ,
            "DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": config["REDIS_URL"],
            "HUEY_NAME": config["HUEY_NAME"],
            "MEDIA_ROOT": config["MEDIA_ROOT"],
            "SECRET_KEY": config["SECRET_KEY"],
            "INSTANCE_PATH": app.instance_path,
            "PYTHONUNBUFFERED": "1",
            **self.settings,
        }
        self.webs = []
        self.consumers = []

    def web(self, name, **options):
        server = WebServer(self.environment, self.workdir / f"{name}.log", **options)
        self.webs.append(server)
        return server

    def consumer(self, name):
        consumer = ConsumerProcess(
            self.app, self.workdir / f"{name}.log", PYTHONUNBUFFERED="1", **self.settings
        )
        self.consumers.append(consumer)
        return consumer

    def wait_started(self, consumer, timeout=90):
        """Wait until the consumer's process says it has started its workers."""
        said = f"PID {consumer.process.pid} "

        def started():
            if consumer.process.poll() is not None:
                raise AssertionError(f"the consumer exited; see {consumer.log_path}")
            return said in Path(consumer.log_path).read_text(errors="replace")

        wait_until(started, timeout, f"the consumer {consumer.process.pid} to start", 0.1)

    def stop(self, timeout=20):
        """Every process at once: SIGINT to the consumers (they hand back what they hold),
        SIGTERM to the web servers; whatever is still up after `timeout` is killed."""
        running = [c for c in self.consumers if c.process and c.process.poll() is None]
        for consumer in running:
            with contextlib.suppress(ProcessLookupError):
                consumer.process.send_signal(signal.SIGINT)
        for server in self.webs:
            server.terminate()
        deadline = time.monotonic() + timeout
        for consumer in running:
            try:
                consumer.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                consumer.kill_9()
        for server in self.webs:
            server.wait(timeout=max(0.1, deadline - time.monotonic()))

    def logs(self):
        """Every process's log, by file name."""
        paths = sorted(self.workdir.glob("*.log"))
        return {path.name: path.read_text(errors="replace") for path in paths}
