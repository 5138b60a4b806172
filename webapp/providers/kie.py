"""The kie.ai engine: upload the input, create an upstream task, poll it, download the result.

kie answers every call with `{"code", "msg", "data"}` and often reports errors as HTTP 200 with
a non-200 `code`, so both are checked. Task ids carry the API style ("jobs:…", "kontext:…")
so polling knows which endpoint to ask. See shared/spec/kie-api.md.
"""

import base64
import io
import json
import logging

import requests
from PIL import Image

from . import Done, Failed, Pending, Submitted
from .kie_payloads import RETRIED, as_int, jobs_body, kontext_body, refusal, task_failure

log = logging.getLogger(__name__)

USER_AGENT = "batchgen/0.1"
UPLOAD_PATH = "batchgen"
RUNNING_STATES = {"waiting", "queuing", "generating"}


class Refused(Exception):
    """An upstream call did not give what was asked; `failed` says why, `code` is kie's code."""

    def __init__(self, failed, code=None):
        super().__init__(failed.message)
        self.failed = failed
        self.code = code


class KieProvider:
    name = "kie"

    def __init__(self, api_key, api_base, upload_base, session=None, timeout=(5, 30)):
        self.api_key = api_key
        self.api_base = api_base.rstrip("/")
        self.upload_base = upload_base.rstrip("/")
        self.session = session or requests.Session()
        self.timeout = timeout
        # Per call rather than on the session, so a shared session never carries our key.
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    def submit(self, request):
        """Upload the input image (if any) and create the upstream task."""
        upstream = request.model.upstream
        upstream_model = upstream.get(request.mode)
        if not upstream_model:
            return Failed(
                "invalid_input", f"{request.model.name} does not offer mode {request.mode!r}."
            )
        if request.mode == "i2i" and request.input_image is None:
            return Failed("invalid_input", "This model edits an image, but none was given.")
        try:
            image_url = self._upload(request) if request.input_image is not None else None
            if upstream["api"] == "kontext":
                body = kontext_body(request, upstream_model, image_url)
                answer = self._call("POST", "/api/v1/flux/kontext/generate", json=body)
            else:
                body = jobs_body(request, upstream_model, image_url)
                answer = self._call("POST", "/api/v1/jobs/createTask", json=body)
        except Refused as refused:
            return self._redact(refused.failed)
        task_id = (answer.get("data") or {}).get("taskId")
        if not task_id:
            return Failed(
                "upstream_error", "kie.ai accepted the request but sent no task id.", True
            )
        return Submitted(f"{upstream['api']}:{task_id}")

    def poll(self, task_id, request):
        """Ask kie about a task; a hiccup while asking is Pending, never a resubmission."""
        style, _, upstream_id = task_id.partition(":")
        try:
            if style == "jobs":
                return self._poll_jobs(upstream_id)
            if style == "kontext":
                return self._poll_kontext(upstream_id)
        except Refused as refused:
            # The task is already paid for upstream: a retryable Failed would send the
            # generation back to pending and submit (and pay) again, so keep polling instead.
            if refused.failed.retryable:
                log.warning("polling kie task %s: %s", task_id, refused.failed.message)
                return Pending()
            return self._redact(refused.failed)
        return Failed("unknown_task", f"Task id {task_id!r} is not a kie.ai task id.")

    def _poll_jobs(self, upstream_id):
        try:
            answer = self._call("GET", "/api/v1/jobs/recordInfo", params={"taskId": upstream_id})
        except Refused as refused:
            # A task just created may not be visible yet.
            if refused.code == 422 and "null" in refused.failed.message.lower():
                return Pending()
            raise
        record = answer.get("data") or {}
        state = record.get("state")
        if state in RUNNING_STATES:
            return Pending()
        if state == "success":
            result = record.get("resultJson") or {}
            if isinstance(result, str):
                result = json.loads(result or "{}")
            urls = result.get("resultUrls") or []
            if not urls:
                return Failed("generation_failed", "kie.ai reported success but sent no image.")
            return self._download(urls[0])
        if state == "fail":
            return self._redact(task_failure(record.get("failCode"), record.get("failMsg")))
        log.warning("kie task %s has unexpected state %r", upstream_id, state)
        return Pending()

    def _poll_kontext(self, upstream_id):
        answer = self._call(
            "GET", "/api/v1/flux/kontext/record-info", params={"taskId": upstream_id}
        )
        record = answer.get("data") or {}
        flag = record.get("successFlag")
        if flag == 1:
            url = (record.get("response") or {}).get("resultImageUrl")
            if not url:
                return Failed("generation_failed", "kie.ai reported success but sent no image.")
            return self._download(url)
        if flag in (2, 3):
            return self._redact(task_failure(record.get("errorCode"), record.get("errorMessage")))
        return Pending()

    def _upload(self, request):
        """Put the input image on kie's file host; answers its download URL."""
        found = image_format(request.input_image)
        if found is None:
            raise Refused(Failed("invalid_input", "The input image is not a readable image."))
        mime, extension = found
        encoded = base64.b64encode(request.input_image).decode("ascii")
        body = {
            "base64Data": f"data:{mime};base64,{encoded}",
            "uploadPath": UPLOAD_PATH,
            "fileName": f"{request.generation_id}.{extension}",
        }
        answer = self._call("POST", "/api/file-base64-upload", base=self.upload_base, json=body)
        url = (answer.get("data") or {}).get("downloadUrl")
        if not url:
            raise Refused(
                Failed("upstream_error", "kie.ai stored the input but sent no URL.", True)
            )
        return url

    def _call(self, method, path, base=None, **kwargs):
        """One authorised call to kie; answers the JSON body or raises Refused."""
        url = (base or self.api_base) + path
        try:
            response = self.session.request(
                method, url, headers=self.headers, timeout=self.timeout, **kwargs
            )
        except requests.Timeout:
            raise Refused(_timeout()) from None
        except requests.RequestException as error:
            raise Refused(_unreachable(error)) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        body_code = as_int(body.get("code")) if isinstance(body, dict) else None
        if body_code is not None and body_code != 200:
            code = body_code
        elif not response.ok:
            code = response.status_code
        elif not isinstance(body, dict):
            raise Refused(
                Failed("upstream_unavailable", f"kie.ai sent an unreadable answer. {RETRIED}", True)
            )
        else:
            return body
        message = (body.get("msg") or body.get("message") or "") if isinstance(body, dict) else ""
        if code in (401, 402):
            log.error(
                "kie.ai answered %s on %s %s: %s (operators must act)", code, method, path, message
            )
        raise Refused(refusal(code, message), code)

    def _download(self, url):
        """Fetch a result from kie's CDN, without our Authorization header."""
        try:
            response = requests.get(url, headers={"User-Agent": USER_AGENT}, timeout=self.timeout)
        except requests.Timeout:
            raise Refused(_timeout()) from None
        except requests.RequestException as error:
            raise Refused(_unreachable(error)) from None
        if response.status_code >= 500:
            raise Refused(refusal(response.status_code, ""))
        if not response.ok:
            return Failed(
                "result_unavailable",
                f"The finished image could no longer be downloaded (HTTP {response.status_code}).",
            )
        found = image_format(response.content)
        if found is None:
            return Failed("generation_failed", "kie.ai sent a result that is not an image.")
        return Done(response.content, found[1])

    def _redact(self, failed):
        if self.api_key and self.api_key in failed.message:
            return Failed(
                failed.code, failed.message.replace(self.api_key, "***"), failed.retryable
            )
        return failed


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


def _timeout():
    return Failed("upstream_timeout", f"kie.ai did not answer in time. {RETRIED}", True)


def _unreachable(error):
    log.warning("kie.ai unreachable: %s", type(error).__name__)
    return Failed("upstream_unavailable", f"kie.ai could not be reached. {RETRIED}", True)
