"""The stub kie.ai itself: it runs standalone (for trying the app by hand and for benchmarks),
takes both upload APIs, and holds creates to its rate limit as kie does."""

import signal
import subprocess
import sys
from pathlib import Path

import requests

from devtools.kie_stub import KieStub, busiest_window

PROJECT_ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer test-key"}
CREATE_BODY = {"prompt": "a cat", "model": "flux-kontext-pro", "aspectRatio": "1:1"}


def test_python_m_devtools_kie_stub_serves_until_interrupted():
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.kie_stub", "--port", "0", "--credits", "7"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first_line = process.stdout.readline()
        base_url = first_line.split(" at ")[1].split()[0]
        answer = requests.get(
            f"{base_url}/api/v1/chat/credit", headers={"Authorization": "Bearer x"}, timeout=5
        ).json()
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=10)

    assert base_url.startswith("http://127.0.0.1:")
    assert answer == {"code": 200, "msg": "success", "data": 7}
    assert process.returncode == 0
    assert "stopped" in output


def test_both_upload_apis_answer_a_download_url_serving_the_file():
    with KieStub() as stub:
        streamed = requests.post(
            f"{stub.base_url}/api/file-stream-upload",
            headers=AUTH,
            files={"file": ("a.png", b"\x89PNG-bytes", "image/png")},
            data={"uploadPath": "batchgen/b1", "fileName": "a.png"},
            timeout=5,
        ).json()
        encoded = requests.post(
            f"{stub.base_url}/api/file-base64-upload",
            headers=AUTH,
            json={"base64Data": "data:image/png;base64,aGVsbG8=", "uploadPath": "batchgen/b1"},
            timeout=5,
        ).json()
        served = requests.get(streamed["data"]["downloadUrl"], timeout=5).content

    assert streamed["code"] == encoded["code"] == 200
    assert streamed["data"]["downloadUrl"].endswith("/files/batchgen/b1/a.png")
    assert encoded["data"]["mimeType"] == "image/png"
    assert served == b"\x89PNG-bytes"
    assert [upload["api"] for upload in stub.uploads] == ["stream", "base64"]


def test_creates_beyond_the_rate_limit_are_refused_with_429_and_not_created():
    with KieStub(rate_limit=(2, 60), retry_after=7) as stub:
        answers = [
            requests.post(
                f"{stub.base_url}/api/v1/flux/kontext/generate",
                headers=AUTH,
                json=CREATE_BODY,
                timeout=5,
            )
            for _ in range(3)
        ]

    assert [answer.json()["code"] for answer in answers] == [200, 200, 429]
    assert answers[2].headers["Retry-After"] == "7"
    assert len(stub.created) == 2 and len(stub.create_attempt_times) == 3


def test_a_body_kie_would_refuse_is_refused_with_422():
    with KieStub() as stub:
        answer = requests.post(
            f"{stub.base_url}/api/v1/jobs/createTask",
            headers=AUTH,
            json={"model": "flux-2/pro-image-to-image", "input": {"prompt": "x"}},
            timeout=5,
        ).json()

    assert answer["code"] == 422
    assert stub.rejected == [("jobs", "input.input_urls is required")]


def test_busiest_window_counts_events_closer_than_the_period():
    assert busiest_window([0.0, 0.5, 0.99, 1.0, 1.2], 1.0) == 4


def test_jitter_gives_each_task_its_own_latency_and_none_by_default():
    def latencies(**options):
        with KieStub(**options) as stub:
            for _ in range(6):
                requests.post(
                    f"{stub.base_url}/api/v1/flux/kontext/generate",
                    headers=AUTH,
                    json=CREATE_BODY,
                    timeout=5,
                )
            return [task["latency"] for task in stub.tasks.values()]

    steady = latencies(latency=1.0)
    jittered = latencies(latency=1.0, jitter=2.0, seed=3)

    assert steady == [1.0] * 6
    assert all(1.0 <= latency < 3.0 for latency in jittered)
    assert len(set(jittered)) == 6
    assert latencies(latency=1.0, jitter=2.0, seed=3) == jittered  # seeded: repeatable
