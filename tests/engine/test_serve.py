"""The front door: `flask --app app serve` (what `make run` starts) serves and works on its own."""

import os
import re
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
    """`make run`: a new database gets a demo user with credits and a one-time sign-in link."""
    port = _free_port()
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "SECRET_KEY", "PUBLIC_BASE_URL")
    }
    # Unbuffered, so the link can be read from the log while the server runs.
    environment.update(INSTANCE_PATH=str(tmp_path), PORT=str(port), PYTHONUNBUFFERED="1")
    embedded = database_url.startswith("sqlite")  # then nothing is set, as on a fresh clone
    if not embedded:
        environment["DATABASE_URL"] = database_url

    subprocess.run(
        [FLASK, "--app", "app", "init-db"],
        cwd=PROJECT_ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [FLASK, "--app", "app", "serve", "--demo"],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        link = wait_for(lambda: _printed_link(log_path, base), timeout=30)
        # The operator's second terminal, without PORT: its links are on the running server.
        elsewhere = {key: value for key, value in environment.items() if key != "PORT"}
        operator = subprocess.run(
            [FLASK, "--app", "app", "users", "login-link", "demo"],
            cwd=PROJECT_ROOT,
            env=elsewhere,
            capture_output=True,
            text=True,
        )
        with requests.Session() as http:
            wait_for(lambda: _answers(http, f"{base}/api/models"), timeout=30)
            answer = http.get(link)
            # One Server header, naming no versions (the raw header lines, not requests' merge).
            assert answer.raw.headers.getlist("Server") == ["batchgen"]
            page = answer.text
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            signed_in = http.post(link, data={"csrf_token": token}, allow_redirects=False)
            # The session cookie works for the API as well as for the pages.
            created = http.post(f"{base}/api/generate/batch", json=batch_body(3)).json()

            def finished():
                detail = http.get(f"{base}/api/generate/batch/{created['batchId']}").json()
                return detail if detail["isComplete"] and detail["finishedAt"] else None

            detail = wait_for(finished, timeout=60)
            result = http.get(detail["results"][0]["imageUrl"])
            me = http.get(f"{base}/api/me").json()
            grid = http.get(f"{base}/batches/{created['batchId']}").text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    assert "Sign in as demo" in page
    assert operator.returncode == 0, operator.stderr
    assert operator.stdout.splitlines()[-1].startswith(f"{base}/auth/link/")
    assert not (tmp_path / "server.json").exists()  # a clean stop forgets the address
    assert signed_in.status_code == 303
    assert detail["status"] == "completed"
    assert result.status_code == 200 and result.headers["Content-Type"] == "image/png"
    assert me == {"id": me["id"], "name": "demo", "credits": 100 - 9}
    assert 'data-status="completed"' in grid
    output = log_path.read_text()
    assert f"batchgen is running at {base}" in output
    assert "Created the user 'demo' with 100⭐." in output
    assert "development server" not in output and "Running on" not in output  # Werkzeug's banner
    assert (tmp_path / "huey.db").exists()
    assert (tmp_path / "app.db").exists() == embedded


def test_a_busy_port_is_one_line_naming_a_free_port_and_no_sign_in_link(tmp_path):
    """A second `make run` on a taken port says so and stops: no "is running", no link."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MEDIA_ROOT", "SECRET_KEY", "PUBLIC_BASE_URL")
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environment.update(INSTANCE_PATH=str(tmp_path), PORT=str(port))
        run = subprocess.run(
            [FLASK, "--app", "app", "serve", "--demo"],
            cwd=PROJECT_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )

    said = (run.stdout + run.stderr).strip().splitlines()
    assert run.returncode != 0
    assert len(said) == 1, said
    suggested = re.fullmatch(
        rf"Error: port {port} on 127\.0\.0\.1 is already in use \(another batchgen\?\); "
        r"try PORT=(\d+) make run",
        said[0],
    )
    assert suggested and int(suggested.group(1)) != port
    assert not (tmp_path / "server.json").exists()


def _printed_link(log_path, base):
    found = re.search(rf"^  ({re.escape(base)}/auth/link/\S+)$", log_path.read_text(), re.M)
    return found.group(1) if found else None


def _answers(http, url):
    try:
        return http.get(url, timeout=1).ok
    except requests.ConnectionError:
        time.sleep(0.1)
        return False
