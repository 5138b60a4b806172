"""The front door: `flask --app app serve` (what `make run` starts) serves and works on its own."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support import batch_body, wait_for

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FLASK = str(Path(sys.executable).with_name("flask"))


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.e2e
def test_serve_runs_web_and_consumer_in_one_process(tmp_path, database_url):
    port = _free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "SECRET_KEY")
    }
    environment.update(INSTANCE_PATH=str(tmp_path), PORT=str(port))
    embedded = database_url.startswith("sqlite")  # then nothing is set, as on a fresh clone
    if not embedded:
        environment["DATABASE_URL"] = database_url

    def flask(*args):
        return subprocess.run(
            [FLASK, "--app", "app", *args],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    flask("init-db")
    token = flask("users", "create", "alice", "--credits", "100").strip().splitlines()[-1]
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [FLASK, "--app", "app", "serve"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with requests.Session() as http:
            wait_for(lambda: _answers(http, f"{base}/api/models"), timeout=30)
            created = http.post(
                f"{base}/api/generate/batch", json=batch_body(3), headers=headers
            ).json()

            def finished():
                detail = http.get(
                    f"{base}/api/generate/batch/{created['batchId']}", headers=headers
                ).json()
                return detail if detail["isComplete"] and detail["finishedAt"] else None

            detail = wait_for(finished, timeout=60)
            result = http.get(detail["results"][0]["imageUrl"])
            me = http.get(f"{base}/api/me", headers=headers).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    assert detail["status"] == "completed"
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/png"
    assert me["credits"] == 100 - 9
    output = log_path.read_text()
    assert f"batchgen is running at {base}" in output
    assert "users create alice --credits 100" in output  # it tells how to log in
    assert (tmp_path / "huey.db").exists()
    assert (tmp_path / "app.db").exists() == embedded


def _answers(http, url):
    try:
        return http.get(url, timeout=1).ok
    except requests.ConnectionError:
        time.sleep(0.1)
        return False
