"""A stub kie.ai on 127.0.0.1 for end-to-end tests and benchmarks (see docs/kie.md).

It answers the calls the real client makes, with kie's envelope (errors as HTTP 200 and a
non-200 body `code`): both upload APIs, the three create/record styles (jobs, Flux Kontext, 4o
image), the credit balance, and a result CDN serving real PNGs made from the uploaded inputs.
It refuses create bodies kie would refuse (rules.py), answers 429 beyond `rate_limit`, and POSTs
to a task's callBackUrl when it finishes, signed like kie's when given a `webhook_key`.

    with KieStub(polls_until_done=1, rate_limit=(20, 10)) as stub:
        app = make_app(tmp_path, KIE_API_BASE=stub.base_url, KIE_UPLOAD_BASE=stub.base_url, ...)

    python -m devtools.kie_stub --port 8099    # the same, standalone, until Ctrl+C

`jitter` spreads the tasks' latencies (each its own, `latency` plus up to `jitter` more).
Misbehaviour is drawn from one seeded generator, so a run is repeatable for a given order of
requests. What the stub saw is kept for assertions: `created` (and `created_times`),
`create_attempt_times` (every create that arrived, refused or not), `uploads`,
`result_downloads`, `callbacks`, and `counts` (a Counter of events).
"""

import base64
import collections
import hashlib
import hmac
import io
import json
import random
import re
import threading
import time
import uuid

import requests
from PIL import Image

from .rules import problem_with
from .server import FILES_PREFIX, serve

CALLBACK_FORMS = ("data.taskId", "data.task_id", "taskId")
CALLBACK_RETRIES = 3  # kie stops after 3 failed retries


class KieStub:
    """A fake kie.ai: uploads, task creation, polling, callbacks and a result CDN, on one port."""

    def __init__(
        self,
        latency=0.0,
        jitter=0.0,
        fail_rate=0.0,
        rate_429=0.0,
        error_5xx_rate=0.0,
        timeout_rate=0.0,
        lost_answer_rate=0.0,
        lost_answers=(),
        polls_until_done=2,
        seed=0,
        api_key="test-key",
        fail_code="501",
        fail_msg="Generation failed.",
        hang_seconds=35.0,
        fail_tasks=(),
        rate_limit=None,
        retry_after=None,
        credits=None,
        auto_callbacks=True,
        callback_form="data.taskId",
        webhook_key=None,
        port=0,
    ):
        self.latency = latency  # a task is done no sooner than this after its create
        # Each task's own latency is `latency` plus a uniform draw in [0, jitter), from a
        # generator of its own (seeded): the misbehaviour drawn from `random` stays as it was.
        self.jitter = jitter
        self.jitter_random = random.Random(f"jitter-{seed}")
        self.fail_rate = fail_rate
        self.rate_429 = rate_429  # random 429s, beside the limit below
        self.error_5xx_rate = error_5xx_rate
        self.timeout_rate = timeout_rate
        # Creates accepted, then the connection dropped before the answer: the task exists
        # (and calls back), the client never learns its id from the create.
        self.lost_answer_rate = lost_answer_rate
        self.lost_answers = set(lost_answers)  # 1-based numbers of accepted creates to drop
        self.polls_until_done = polls_until_done
        self.api_key = api_key  # None: any Bearer token will do
        self.fail_code = fail_code
        self.fail_msg = fail_msg
        # Longer than the client's read timeout (KieProvider's is 30 s), so the client gives up.
        self.hang_seconds = hang_seconds
        self.fail_tasks = set(fail_tasks)  # 1-based numbers of accepted creates that will fail
        self.rate_limit = rate_limit  # (creates, seconds): kie's 20 per 10 s; None: no limit
        self.retry_after = retry_after  # seconds sent as Retry-After with every 429
        self.credits = credits  # the account's balance (each create costs 1); None: unlimited
        self.auto_callbacks = auto_callbacks  # call back `latency` after a create, by itself
        if callback_form not in CALLBACK_FORMS:
            raise ValueError(f"callback_form must be one of {CALLBACK_FORMS}")
        self.callback_form = callback_form
        self.webhook_key = webhook_key
        self.lock = threading.Lock()
        self.random = random.Random(seed)
        self.stopping = threading.Event()
        self.timers = []
        self.files = {}  # path under /files/ → bytes
        self.tasks = {}  # task id → {"style", "created_at", "polls", "fails", "finished", …}
        # What it saw, appended under the lock (copy them with list() while requests run):
        self.counts = collections.Counter()  # upload, create, poll, rate_limited, hung_up, …
        self.created = []  # the bodies of the tasks it accepted
        self.created_times = []  # time.monotonic() each accepted create arrived, in order
        self.create_attempt_times = []  # time.monotonic() of every create that arrived
        self.rejected = []  # (style, message) of create bodies refused as invalid
        self.uploads = []  # {"fileName", "uploadPath", "size", "api"} per upload
        self.result_downloads = []  # {"path", "headers"} per result GET; names lower-cased
        self.callbacks = []  # {"taskId", "url", "status"} per callback POST (status: int or error)
        self.server, self.thread = serve(self, port)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        """Cancel pending callbacks, wake any hanging request, stop serving, close the socket."""
        self.stopping.set()
        with self.lock:
            timers = list(self.timers)
        for timer in timers:
            timer.cancel()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def authorised(self, header):
        if self.api_key is None:
            return bool(header and header.startswith("Bearer ") and header[7:].strip())
        return header == f"Bearer {self.api_key}"

    def _count(self, event):
        with self.lock:
            self.counts[event] += 1

    def _refuse(self, event, code, message):
        """kie's way to refuse: HTTP 200 with the error code in the body."""
        self._count(event)
        return {"code": code, "msg": message, "data": None}

    def upload(self, api, fields):
        """Keep an uploaded input; answers kie's upload envelope with a downloadUrl to it.

        `fields` holds `uploadPath`, `fileName` and the bytes under `file` (stream upload) or
        `base64Data` (plain base64 or a data URL) as kie-api.md describes them.
        """
        content = fields.get("file")
        mime = "application/octet-stream"
        if content is None:
            raw = str(fields.get("base64Data") or "")
            if raw.startswith("data:"):
                header, _, raw = raw.partition(",")
                mime = header[5:].split(";")[0] or mime
            try:
                content = base64.b64decode(raw, validate=True)
            except ValueError:
                return self._refuse("bad_upload", 422, "base64Data is not valid base64")
        if not content:
            return self._refuse("bad_upload", 422, "The file is empty")
        name = fields.get("fileName") or f"{uuid.uuid4().hex}.bin"
        path = f"{fields.get('uploadPath') or 'uploads'}/{name}"
        with self.lock:
            self.files[path] = content  # the same name overwrites, as kie does
            self.uploads.append(
                {
                    "fileName": name,
                    "uploadPath": fields.get("uploadPath"),
                    "size": len(content),
                    "api": api,
                }
            )
            self.counts["upload"] += 1
        data = {
            "fileName": name,
            "filePath": path,
            "downloadUrl": f"{self.base_url}{FILES_PREFIX}{path}",
            "fileSize": len(content),
            "mimeType": mime,
            "uploadedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return {"success": True, "code": 200, "msg": "File uploaded successfully", "data": data}

    def create(self, style, body):
        """Accept a task (answers the envelope), or misbehave; None means hang up.

        Whether the task will fail (fail_rate, fail_tasks) is decided here, so polling it is
        repeatable.
        """
        arrived = time.monotonic()  # kie counts a create when it arrives
        with self.lock:
            self.create_attempt_times.append(arrived)
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
        problem = problem_with(style, body)
        if problem:
            with self.lock:
                self.rejected.append((style, problem))
            return self._refuse("invalid", 422, problem)
        answer, lost = self._accept(style, body, fails, arrived)
        return None if lost else answer

    def _accept(self, style, body, fails, arrived):
        task_id = uuid.uuid4().hex
        result = self._result_image(body)
        with self.lock:
            if self._over_limit(arrived):
                self.counts["rate_limited"] += 1
                self.counts["over_limit"] += 1
                return {"code": 429, "msg": "Rate limit exceeded: 20 requests per 10s"}, False
            if self.credits is not None and self.credits < 1:
                self.counts["out_of_credits"] += 1
                answer = {"code": 402, "msg": "Credits insufficient. Please top up your account."}
                return answer, False
            if self.credits is not None:
                self.credits -= 1
            self.files[f"results/{task_id}.png"] = result
            spread = self.jitter_random.uniform(0, self.jitter) if self.jitter else 0.0
            latency = self.latency + spread
            self.tasks[task_id] = {
                "style": style,
                "created_at": arrived,
                "latency": latency,
                "polls": 0,
                "fails": fails or len(self.created) + 1 in self.fail_tasks,
                "finished": False,
                "callback_url": body.get("callBackUrl"),
            }
            self.created.append(body)
            self.created_times.append(arrived)
            self.counts["create"] += 1
            # The task exists either way; a lost answer only never reaches the client.
            lost = (
                len(self.created) in self.lost_answers
                or self.random.random() < self.lost_answer_rate
            )
            if lost:
                self.counts["lost_answer"] += 1
        if body.get("callBackUrl") and self.auto_callbacks:
            self._call_back_later(task_id)
        return {"code": 200, "msg": "success", "data": {"taskId": task_id}}, lost

    def _over_limit(self, now):
        """Whether `rate_limit` creates were accepted in the last window (call under the lock)."""
        if not self.rate_limit:
            return False
        limit, period = self.rate_limit
        return sum(1 for moment in self.created_times if moment > now - period) >= limit

    def record(self, style, task_id):
        """The record-info answer for one task, in the endpoint's own shape."""
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task["style"] != style:
                return {"code": 422, "msg": "recordInfo is null", "data": None}
            task["polls"] += 1
            self.counts["poll"] += 1
            done = task["finished"] or (
                task["polls"] > self.polls_until_done
                and time.monotonic() - task["created_at"] >= task["latency"]
            )
            fails = task["fails"]
            if done and fails:
                self.counts["failed"] += 1
        data = self._record_data(style, task_id, done, fails)
        return {"code": 200, "msg": "success", "data": data}

    def _record_data(self, style, task_id, done, fails):
        url = f"{self.base_url}{FILES_PREFIX}results/{task_id}.png"
        failed = done and fails
        if style == "kontext":
            data = {"taskId": task_id, "successFlag": 0, "response": None, "errorCode": None}
            if failed:
                data.update(successFlag=3, errorCode=self.fail_code, errorMessage=self.fail_msg)
            elif done:
                data.update(successFlag=1, response={"resultImageUrl": url})
        elif style == "gpt4o":
            data = {"taskId": task_id, "status": "GENERATING", "progress": "0.50", "response": None}
            if failed:
                data.update(
                    status="GENERATE_FAILED", errorCode=self.fail_code, errorMessage=self.fail_msg
                )
            elif done:
                data.update(status="SUCCESS", progress="1.00", response={"resultUrls": [url]})
        else:
            data = {"taskId": task_id, "state": "generating", "resultJson": "", "failCode": ""}
            if failed:
                data.update(state="fail", failCode=self.fail_code, failMsg=self.fail_msg)
            elif done:
                data.update(state="success", resultJson=json.dumps({"resultUrls": [url]}))
        return data

    def balance(self):
        """The credit endpoint's answer: `data` is the balance, an integer."""
        credits = 10**6 if self.credits is None else self.credits
        return {"code": 200, "msg": "success", "data": credits}

    def finish(self, task_ids=None):
        """Finish tasks now, whatever their polls and latency (all of them by default)."""
        with self.lock:
            chosen = list(self.tasks) if task_ids is None else list(task_ids)
            for task_id in chosen:
                self.tasks[task_id]["finished"] = True
        return chosen

    def deliver_callbacks(self, task_ids=None):
        """Finish tasks and POST their callbacks now, from the calling thread (tasks created
        without a callBackUrl are skipped); answers our app's statuses, in order."""
        with self.lock:
            chosen = [
                task_id
                for task_id, task in self.tasks.items()
                if task["callback_url"] and (task_ids is None or task_id in task_ids)
            ]
        return [self._call_back(task_id) for task_id in chosen]

    def _call_back_later(self, task_id):
        with self.lock:
            latency = self.tasks[task_id]["latency"]
        timer = threading.Timer(latency, self._call_back, args=(task_id,))
        timer.daemon = True
        with self.lock:
            self.timers.append(timer)
        timer.start()

    def _call_back(self, task_id):
        """Finish the task and POST its callback as kie does, retrying a failed delivery."""
        self.finish([task_id])
        with self.lock:
            task = self.tasks[task_id]
            style, url, fails = task["style"], task["callback_url"], task["fails"]
        body = self._callback_body(style, task_id, fails)
        status = None
        for _ in range(1 + CALLBACK_RETRIES):
            if self.stopping.is_set():
                break
            try:
                response = requests.post(
                    url, json=body, headers=self._signature_headers(task_id), timeout=15
                )
                status = response.status_code
            except requests.RequestException as error:
                status = type(error).__name__
            if status == 200:
                break
            time.sleep(0.2)
        with self.lock:
            self.callbacks.append({"taskId": task_id, "url": url, "status": status})
            self.counts["callback"] += 1
        return status

    def _callback_body(self, style, task_id, fails):
        """A callback like the record answer, naming the task in the chosen form."""
        data = self._record_data(style, task_id, True, fails)
        body = {"code": 501 if fails else 200, "msg": "Task finished", "data": data}
        if self.callback_form == "data.task_id":
            data["task_id"] = data.pop("taskId")
        elif self.callback_form == "taskId":
            body["taskId"] = data.pop("taskId")
        return body

    def _signature_headers(self, task_id):
        if not self.webhook_key:
            return {}
        timestamp = str(int(time.time()))
        message = f"{task_id}.{timestamp}".encode()
        digest = hmac.new(self.webhook_key.encode(), message, hashlib.sha256).digest()
        return {
            "X-Webhook-Timestamp": timestamp,
            "X-Webhook-Signature": base64.b64encode(digest).decode(),
        }

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


def busiest_window(times, period):
    """The most events inside any window of `period` seconds."""
    times = sorted(times)
    busiest, start = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= period:
            start += 1
        busiest = max(busiest, end - start + 1)
    return busiest
