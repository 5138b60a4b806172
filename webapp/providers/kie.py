"""The kie.ai engine: upload the input, create an upstream task, poll it, download the result.

kie answers every call with `{"code", "msg", "data"}` and often reports errors as HTTP 200 with
a non-200 `code`, so both are checked. Task ids carry the API style ("jobs:…", "kontext:…")
so polling knows which endpoint to ask. See shared/spec/kie-api.md.
"""

import base64
import io
import json
import logging
import time

import requests
from PIL import Image

from ..pacing import UNPACED
from . import RETRIED, Done, Failed, Pending, Submitted, Throttled
from .kie_payloads import as_int, jobs_body, kontext_body, refusal, task_failure

log = logging.getLogger(__name__)

USER_AGENT = "batchgen/0.1"
UPLOAD_PATH = "batchgen"
RUNNING_STATES = {"waiting", "queuing", "generating"}
NO_IMAGE = "kie.ai reported success but sent no image."


class Refused(Exception):
    """A call to kie did not give what was asked: `failed` says why in our terms."""

    def __init__(self, failed, code=None, upstream_message=""):
        super().__init__(failed.message)
        self.failed = failed
        self.code = code
        self.upstream_message = upstream_message


class KieProvider:
    name = "kie"
    paced = True  # kie.ai limits new generations per API key: UPSTREAM_RATE_LIMIT

    def __init__(self, api_key, api_base, upload_base, session=None, timeout=(5, 30)):
        self.api_key = api_key
        self.api_base = api_base.rstrip("/")
        self.upload_base = upload_base.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout
        # init_app gives it the pacer every consumer shares, and how long to wait for a slot.
        self.pacer = UNPACED
        self.pace_hold_seconds = 0.0
        # Sent per call rather than set on the session, so a session passed in stays clean.
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    def submit(self, request):
        """Upload the input image (if any) and create the upstream task."""
        return self._redact(self._submit(request))

    def poll(self, task_id, request):
        """Ask kie about a submitted task and download its result once it is done."""
        return self._redact(self._poll(task_id))

    def _submit(self, request):
        upstream = request.model.upstream
        upstream_model = upstream.get(request.mode)
        if not upstream_model:
            return Failed("invalid_input", f"{request.model.name} does not offer {request.mode}.")
        if request.mode == "i2i" and request.input_image is None:
            return Failed("invalid_input", "This model edits an image, but none was given.")
        try:
            image_url = self._upload(request) if request.input_image is not None else None
            wait = self._take_slot()
            if wait:
                return Throttled(wait)
            if upstream["api"] == "kontext":
                body = kontext_body(request, upstream_model, image_url)
                answer = self._call("POST", "/api/v1/flux/kontext/generate", json=body)
            else:
                body = jobs_body(request, upstream_model, image_url)
                answer = self._call("POST", "/api/v1/jobs/createTask", json=body)
        except Refused as refused:
            return refused.failed
        task_id = (answer.get("data") or {}).get("taskId")
        if not task_id:
            return Failed("upstream_error", f"kie.ai sent no task id. {RETRIED}", True)
        return Submitted(f"{upstream['api']}:{task_id}")

    def _take_slot(self):
        """Take a slot of the shared pacer right before creating the task, where kie counts:
        0 once taken, else the seconds to wait. A slot that frees within pace_hold_seconds is
        waited for here (the upload is done); a longer wait is handed back to the engine."""
        deadline = time.monotonic() + self.pace_hold_seconds
        while True:
            wait = self.pacer.acquire()
            if not wait or time.monotonic() + wait > deadline:
                return wait
            time.sleep(wait)

    def _poll(self, task_id):
        style, _, upstream_id = task_id.partition(":")
        try:
            if style == "jobs":
                return self._poll_jobs(upstream_id)
            if style == "kontext":
                return self._poll_kontext(upstream_id)
        except Refused as refused:
            # The task is already paid for upstream. A retryable Failed would send the
            # generation back to pending to be submitted (and paid) again: keep polling instead.
            if refused.failed.retryable:
                log.warning("polling kie task %s: %s", task_id, refused.failed.message)
                return Pending()
            return refused.failed
        return Failed("unknown_task", f"{task_id!r} is not a kie.ai task id.")

    def _poll_jobs(self, upstream_id):
        try:
            answer = self._call("GET", "/api/v1/jobs/recordInfo", params={"taskId": upstream_id})
        except Refused as refused:
            # "recordInfo is null": a task just created is not visible yet.
            if refused.code == 422 and "null" in refused.upstream_message.lower():
                return Pending()
            raise
        record = answer.get("data") or {}
        state = record.get("state")
        if state == "success":
            result = record.get("resultJson") or {}
            try:
                result = json.loads(result) if isinstance(result, str) else result
                url = result["resultUrls"][0]
            except (ValueError, TypeError, KeyError, IndexError):
                return Failed("generation_failed", NO_IMAGE)
            return self._download(url)
        if state == "fail":
            return task_failure(record.get("failCode"), record.get("failMsg"))
        if state not in RUNNING_STATES:
            log.warning("kie task %s has unexpected state %r", upstream_id, state)
        return Pending()

    def _poll_kontext(self, upstream_id):
        params = {"taskId": upstream_id}
        answer = self._call("GET", "/api/v1/flux/kontext/record-info", params=params)
        record = answer.get("data") or {}
        flag = as_int(record.get("successFlag"))
        if flag == 1:
            url = (record.get("response") or {}).get("resultImageUrl")
            return self._download(url) if url else Failed("generation_failed", NO_IMAGE)
        if flag in (2, 3):
            return task_failure(record.get("errorCode"), record.get("errorMessage"))
        return Pending()

    def _upload(self, request):
        """Put the input image on kie's file host (generation takes URLs only); answers the URL."""
        found = image_format(request.input_image)
        if found is None:
            raise Refused(Failed("invalid_input", "The input image is not a readable image."))
        mime, extension = found
        encoded = base64.b64encode(request.input_image).decode("ascii")
        body = {
            "base64Data": f"data:{mime};base64,{encoded}",
            "uploadPath": UPLOAD_PATH,
            # One name per generation: a retry overwrites its own upload instead of adding one.
            "fileName": f"{request.generation_id}.{extension}",
        }
        answer = self._call("POST", "/api/file-base64-upload", base=self.upload_base, json=body)
        url = (answer.get("data") or {}).get("downloadUrl")
        if not url:
            failed = Failed("upstream_error", f"kie.ai did not return the upload. {RETRIED}", True)
            raise Refused(failed)
        return url

    def _call(self, method, path, base=None, **kwargs):
        """One authorised call to kie; answers the JSON body or raises Refused."""
        try:
            response = self.session.request(
                method,
                (base or self.api_base) + path,
                headers=self.headers,
                timeout=self.timeout,
                **kwargs,
            )
        except requests.RequestException as error:
            raise Refused(_transport_failure(error)) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        body_code = as_int(body.get("code"))
        if body_code is not None and body_code != 200:
            code = body_code
        elif not response.ok:
            code = response.status_code
        elif not body:
            message = f"kie.ai sent an unreadable answer. {RETRIED}"
            raise Refused(Failed("upstream_unavailable", message, True))
        else:
            return body
        message = str(body.get("msg") or body.get("message") or "")
        if code in (401, 402):
            log.error(
                "kie.ai answered %s to %s %s: %s (an operator must act)",
                code,
                method,
                path,
                message,
            )
        raise Refused(refusal(code, message), code, message)

    def _download(self, url):
        """Fetch a result from kie's CDN at once (its URLs expire), without our Authorization."""
        try:
            response = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=self.timeout)
        except requests.RequestException as error:
            raise Refused(_transport_failure(error)) from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Refused(refusal(response.status_code, ""), response.status_code)
        if not response.ok:
            message = f"The finished image could not be downloaded (HTTP {response.status_code})."
            return Failed("result_unavailable", message)
        found = image_format(response.content)
        if found is None:
            return Failed("generation_failed", "kie.ai sent a result that is not an image.")
        return Done(response.content, found[1])

    def _redact(self, outcome):
        """The outcome, with our API key blanked out of any message (kie may echo it)."""
        if isinstance(outcome, Failed) and self.api_key and self.api_key in outcome.message:
            message = outcome.message.replace(self.api_key, "***")
            return Failed(outcome.code, message, outcome.retryable)
        return outcome


def image_format(data):
    """(mime type, file extension) of image bytes, or None if Pillow cannot read them."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_type = image.format or "PNG"
    except (OSError, Image.DecompressionBombError):
        return None
    # Phones save JPEGs that Pillow reads as MPO; to everyone else they are plain JPEGs.
    if image_type in ("JPEG", "MPO"):
        return "image/jpeg", "jpg"
    return Image.MIME.get(image_type, f"image/{image_type.lower()}"), image_type.lower()


def _transport_failure(error):
    if isinstance(error, requests.Timeout):
        return Failed("upstream_timeout", f"kie.ai did not answer in time. {RETRIED}", True)
    log.warning("kie.ai unreachable: %s", type(error).__name__)
    return Failed("upstream_unavailable", f"kie.ai could not be reached. {RETRIED}", True)
