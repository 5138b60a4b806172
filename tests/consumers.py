"""Real `huey_consumer app.huey` processes on Redis, as ops run them, for crash tests."""

import os
import signal
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HUEY_CONSUMER = str(Path(sys.executable).with_name("huey_consumer"))


def queue_name():
    """A Huey name of this test process's own, so runs sharing a Redis never meet."""
    return f"batchgen-test-{os.getpid()}"


class ConsumerProcess:
    """`huey_consumer app.huey` in its own process group, configured like the app `app`."""

    def __init__(self, app, log_path, **settings):
        config = app.config
        self.log_path = log_path
        self.environment = {
            **os.environ,
            "DATABASE_URL": config["SQLALCHEMY_DATABASE_URI"],
            "REDIS_URL": config["REDIS_URL"],
            "HUEY_NAME": config["HUEY_NAME"],
            "MEDIA_ROOT": config["MEDIA_ROOT"],
            "SECRET_KEY": config["SECRET_KEY"],
            "INSTANCE_PATH": app.instance_path,
            **{name: str(value) for name, value in settings.items()},
        }
        self.process = None

    def start(self, worker_type="thread", workers=4, periodic=True):
        arguments = [HUEY_CONSUMER, "app.huey", "-k", worker_type, "-w", str(workers)]
        if not periodic:
            arguments.append("--no-periodic")
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                arguments,
                cwd=PROJECT_ROOT,
                env=self.environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill -9 reaches every worker
            )
        return self

    def kill_9(self):
        """kill -9 the consumer and its worker processes: no handler runs, nothing is tidied."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, signum=signal.SIGINT, timeout=30):
        """Send `signum` (SIGINT: finish the tasks in hand; SIGTERM: now) and wait for the exit."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signum)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_9()
            raise

    def log(self):
        return Path(self.log_path).read_text()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.process is not None and self.process.poll() is None:
            self.kill_9()
