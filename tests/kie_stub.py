"""A stub kie.ai on 127.0.0.1 for end-to-end tests and benchmarks (see shared/spec/kie-api.md).

It answers the calls the real client makes, with kie's envelope (errors as HTTP 200 and a
non-200 body `code`), and serves real PNGs made from the uploaded inputs:

    with KieStub(polls_until_done=1) as stub:
        app = make_app(tmp_path, KIE_API_BASE=stub.base_url, KIE_UPLOAD_BASE=stub.base_url, ...)

Misbehaviour is drawn from one seeded generator, so a run is repeatable for a given order of
requests. What the stub saw is kept for assertions: `created` (and `created_times`), `uploads`,
`result_downloads`, and `counts` (a Counter of events).
"""

import base64
import collections
import io
import json
import random
import re
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

CREATE_PATHS = {"/api/v1/jobs/createTask": "jobs", "/api/v1/flux/kontext/generate": "kontext"}
RECORD_PATHS = {"/api/v1/jobs/recordInfo": "jobs", "/api/v1/flux/kontext/record-info": "kontext"}
UPLOAD_PATH = "/api/file-base64-upload"
FILES_PREFIX = "/files/"


class KieStub:
    """A fake kie.ai: uploads, task creation, polling, and a result CDN, on one local port."""

    def __init__(
        self,
        latency=0.0,
        fail_rate=0.0,
        rate_429=0.0,
        error_5xx_rate=0.0,
        timeout_rate=0.0,
        polls_until_done=2,
        seed=0,
        api_key="test-key",
        fail_code="501",
        fail_msg="Generation failed.",
        hang_seconds=35.0,
    ):
        self.latency = latency
        self.fail_rate = fail_rate
        self.rate_429 = rate_429
        self.error_5xx_rate = error_5xx_rate
        self.timeout_rate = timeout_rate
        self.polls_until_done = polls_until_done
        self.api_key = api_key
        self.fail_code = fail_code
        self.fail_msg = fail_msg
        # Longer than the client's read timeout (KieProvider's is 30 s), so the client gives up.
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.files = {}  # path under /files/ → bytes
        self.tasks = {}  # task id → {"style", "created_at", "polls", "fails"}
        # What it saw, appended under the lock (copy them with list() while requests run):
        self.counts = collections.Counter()  # upload, create, poll, rate_limited, hung_up, …
        self.created = []  # the bodies of the tasks it accepted
        self.created_times = []  # time.monotonic() of each accepted create, in order
        self.uploads = []  # {"fileName", "uploadPath", "size"} per upload
        self.result_downloads = []  # {"path", "headers"} per result GET; names lower-cased
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.stub = self
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def stop(self):
        """Wake any hanging request, stop serving and close the socket."""
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def _count(self, event):
        with self.lock:
            self.counts[event] += 1

    def _refuse(self, event, code, message):
        """kie's way to refuse: HTTP 200 with the error code in the body."""
        self._count(event)
        return {"code": code, "msg": message, "data": None}

    def upload(self, body):
        """Keep an uploaded input; answers kie's upload envelope with a downloadUrl to it."""
        raw = str(body.get("base64Data") or "")
        if raw.startswith("data:"):
            raw = raw.partition(",")[2]
        try:
            content = base64.b64decode(raw, validate=True)
        except ValueError:
            return self._refuse("bad_upload", 422, "base64Data is not valid base64")
        name = body.get("fileName") or f"{uuid.uuid4().hex}.bin"
        path = f"{body.get('uploadPath') or 'uploads'}/{name}"
        with self.lock:
            self.files[path] = content  # the same name overwrites, as kie does
            self.uploads.append(
                {"fileName": name, "uploadPath": body.get("uploadPath"), "size": len(content)}
            )
            self.counts["upload"] += 1
        data = {
            "fileName": name,
            "filePath": path,
            "downloadUrl": f"{self.base_url}{FILES_PREFIX}{path}",
            "fileSize": len(content),
            "mimeType": "application/octet-stream",
            "uploadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return {"success": True, "code": 200, "msg": "File uploaded successfully", "data": data}

    def create(self, style, body):
        """Accept a task (answers the envelope), or misbehave; None means hang up.

        Whether the task will fail (fail_rate) is decided here, so polling it is repeatable.
        """
        with self.lock:
            roll, fails = self.random.random(), self.random.random() < self.fail_rate
        if roll < self.rate_429:
            return self._refuse("rate_limited", 429, "Rate limited: too many requests")
        roll -= self.rate_429
        if roll < self.error_5xx_rate:
            return self._refuse("server_error", 500, "Server exception, please try again later")
        if roll - self.error_5xx_rate < self.timeout_rate:
            self._count("hung_up")
            self.stopping.wait(self.hang_seconds)  # stop() wakes it
            return None
        task_id = uuid.uuid4().hex
        result = self._result_image(body)
        with self.lock:
            self.files[f"results/{task_id}.png"] = result
            task = {"style": style, "created_at": time.monotonic(), "polls": 0, "fails": fails}
            self.tasks[task_id] = task
            self.created.append(body)
            self.created_times.append(time.monotonic())
            self.counts["create"] += 1
        return {"code": 200, "msg": "success", "data": {"taskId": task_id}}

    def record(self, style, task_id):
        """The record-info answer for one task, in the endpoint's own shape."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task["style"] != style:
                return {"code": 422, "msg": "recordInfo is null", "data": None}
            task["polls"] += 1
            self.counts["poll"] += 1
            done = (
                task["polls"] > self.polls_until_done
                and time.monotonic() - task["created_at"] >= self.latency
            )
            failed = done and task["fails"]
            if failed:
                self.counts["failed"] += 1
        url = f"{self.base_url}{FILES_PREFIX}results/{task_id}.png"
        if style == "kontext":
            data = {"taskId": task_id, "successFlag": 0, "response": None, "errorCode": None}
            if failed:
                data.update(successFlag=3, errorCode=self.fail_code, errorMessage=self.fail_msg)
            elif done:
                data.update(successFlag=1, response={"resultImageUrl": url})
        else:
            data = {"taskId": task_id, "state": "generating", "resultJson": "", "failCode": ""}
            if failed:
                data.update(state="fail", failCode=self.fail_code, failMsg=self.fail_msg)
            elif done:
                data.update(state="success", resultJson=json.dumps({"resultUrls": [url]}))
        return {"code": 200, "msg": "success", "data": data}

    def download(self, path, headers):
        """A stored file's bytes (None if unknown), noting who asked for results and how."""
        with self.lock:
            if path.startswith("results/"):
                lowered = {name.lower(): value for name, value in headers.items()}
                self.result_downloads.append({"path": path, "headers": lowered})
                self.counts["result_download"] += 1
            return self.files.get(path)

    def _result_image(self, body):
        """A real PNG: the uploaded input this task names, at twice its size (grey if none)."""
        # Whatever the model calls its image field, the input is a URL into our /files/.
        prefix = re.escape(f"{self.base_url}{FILES_PREFIX}")
        paths = re.findall(prefix + r'([^"\\]+)', json.dumps(body))
        with self.lock:
            source = next((self.files[path] for path in paths if path in self.files), None)
        try:
            with Image.open(io.BytesIO(source or b"")) as opened:
                image = opened.convert("RGB")
            image = image.resize((image.width * 2, image.height * 2))
        except OSError:  # no input (text-to-image) or not an image
            image = Image.new("RGB", (256, 256), (128, 128, 128))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that gave up (timed out) is expected; anything else is a bug in the stub."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            raise


class _Handler(BaseHTTPRequestHandler):
    """Routes kie's paths to the KieStub on `self.server.stub`."""

    def do_POST(self):
        stub = self.server.stub
        path = urlsplit(self.path).path
        if path not in CREATE_PATHS and path != UPLOAD_PATH:
            return self._send_json({"code": 404, "msg": "Not found"}, 404)
        if not self._authorised():
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return self._send_json({"code": 422, "msg": "The body must be a JSON object"})
        if path == UPLOAD_PATH:
            return self._send_json(stub.upload(body))
        answer = stub.create(CREATE_PATHS[path], body)
        if answer is not None:
            self._send_json(answer)

    def do_GET(self):
        stub = self.server.stub
        url = urlsplit(self.path)
        if url.path.startswith(FILES_PREFIX):
            content = stub.download(url.path[len(FILES_PREFIX) :], self.headers)
            if content is None:
                return self._send(404, b"not found", "text/plain")
            return self._send(200, content, "image/png")
        if url.path not in RECORD_PATHS:
            return self._send_json({"code": 404, "msg": "Not found"}, 404)
        if self._authorised():
            task_id = (parse_qs(url.query).get("taskId") or [""])[0]
            self._send_json(stub.record(RECORD_PATHS[url.path], task_id))

    def _authorised(self):
        if self.headers.get("Authorization") == f"Bearer {self.server.stub.api_key}":
            return True
        self._send_json({"code": 401, "msg": "You do not have access permissions"}, 401)
        return False

    def _send_json(self, body, status=200):
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status, content, content_type):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format, *args):
        pass  # quiet: tests assert on what the stub recorded, not on its log
