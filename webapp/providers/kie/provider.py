"""The kie.ai engine: upload the input, create an upstream task, poll it, download the result.

Three API styles (the jobs API, Flux Kontext, 4o image) are told apart by the catalog's kie
mapping; the task id we store carries the style ("jobs:…", "kontext:…", "gpt4o:…") so a poll
knows which endpoint to ask. See docs/kie.md, payloads.py and codes.py.
"""

import io
import logging
import random
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from PIL import Image

from ...metrics import upstream_call
from ...pacing import UNPACED
from .. import RETRIED, UNCONFIRMED_PREFIX, Done, Failed, Pending, Submitted, Throttled
from .callbacks import attempt_query
from .client import KieClient, Refused, answer_data
from .codes import WAIT_CODES, task_failure
from .payloads import FAILED, RUNNING, STYLES, create_body, unsupported

log = logging.getLogger(__name__)

UPLOAD_FOLDER = "batchgen"
NO_IMAGE = "The image service reported success but sent no image."
UNCONFIRMED_MESSAGE = f"The image service did not confirm this image's task in time. {RETRIED}"
LEASE_LOST = f"This image's attempt was taken over before its task was created. {RETRIED}"
LOST_TASK = (
    "The image service has no record of this image's task, so it never ran. "
    "Try again in a little while."
)


class KieProvider:
    name = "kie"
    paced = True  # kie.ai limits new generations per API key: UPSTREAM_RATE_LIMIT

    # An account out of credits waits this long between tries (an operator must top it up).
    out_of_credits_wait = 60.0
    # kie answers a task just created with 422 "recordInfo is null" until it becomes visible.
    record_grace_seconds = 60.0
    # The longest Retry-After of a 429 we honour.
    max_rate_limited_wait = 300.0

    def __init__(
        self,
        api_key,
        api_base,
        upload_base,
        session=None,
        timeout=(5, 30),
        callback_url=None,
        rate_limited_wait=10.0,
        pacer=UNPACED,
        pace_hold_seconds=0.0,
        callback_secret=None,
        confirm_grace_seconds=120.0,
    ):
        self.api_key = api_key
        self.client = KieClient(api_key, api_base, upload_base, session, timeout)
        self.callback_url = callback_url
        # Signs each attempt's callBackUrl (SECRET_KEY), so a callback names its attempt.
        self.callback_secret = callback_secret
        # How long a create whose answer was lost waits for its callback before it is re-created.
        self.confirm_grace_seconds = confirm_grace_seconds
        # A 429 waits at least this (kie's window: the request was dropped, not queued).
        self.rate_limited_wait = rate_limited_wait
        # The pacer every consumer shares (webapp.pacing), and how long to wait here for a slot.
        self.pacer = pacer
        self.pace_hold_seconds = pace_hold_seconds

    def submit(self, request):
        """Upload the input image (if any) and create the upstream task."""
        return self._redact(self._submit(request))

    def poll(self, task_id, request):
        """Ask kie about a submitted task and download its result once it is done."""
        return self._redact(self._poll(task_id, request))

    def _submit(self, request):
        problem = unsupported(request)
        if problem:
            return Failed("invalid_input", problem)
        if request.mode == "i2i" and request.input_image is None:
            return Failed("invalid_input", "This model edits an image, but none was given.")
        style = request.model.kie.style
        try:
            image_url = self._upload(request) if request.input_image is not None else None
        except Refused as refused:
            return self._wait_or_fail(refused)
        wait = self._take_slot()
        if wait:
            return Throttled(wait)
        body = create_body(request, image_url, self._callback_for(request, style))
        if not self._mark_create(request, style):
            return Failed("lease_lost", LEASE_LOST, True)  # another attempt owns the image now
        try:
            with upstream_call("create", _rate_limited):
                answer = self.client.call("POST", STYLES[style].create_path, json=body)
        except Refused as refused:
            if refused.unanswered and self._names_attempt(request):
                # kie may have the task: its callback will name it. Never re-create blindly.
                log.warning("kie create for %s went unanswered; waiting for its callback",
                            request.generation_id)
                return Submitted(f"{UNCONFIRMED_PREFIX}{style}", confirmed=False)
            return self._wait_or_fail(refused)
        task_id = answer_data(answer).get("taskId")
        if not task_id:
            return Failed("upstream_error", f"The image service sent no task id. {RETRIED}", True)
        return Submitted(f"{style}:{task_id}")

    def _mark_create(self, request, style):
        """Record that a create is about to leave (request.before_create), when its callback
        can name the attempt: a worker killed before the answer then leaves an attempt that
        waits the grace for that callback. Without callbacks nothing could name the task, so
        nothing is recorded. False if the attempt's lease was lost meanwhile."""
        if request.before_create is None or not self._names_attempt(request):
            return True
        return request.before_create(f"{UNCONFIRMED_PREFIX}{style}")

    def _names_attempt(self, request):
        """Whether kie's callback will name this attempt, so a lost create can be found."""
        return bool(self.callback_url and self.callback_secret and request.attempt)

    def _callback_for(self, request, style):
        """The create's callBackUrl: our route, naming the attempt when we can sign it."""
        if not self.callback_url:
            return None
        if not self._names_attempt(request):
            return self.callback_url
        query = attempt_query(self.callback_secret, request.generation_id, request.attempt, style)
        return f"{self.callback_url}?{urlencode(query)}"

    def _wait_or_fail(self, refused):
        """A refusal that created nothing and only needs time waits (Throttled, uncounted);
        any other is the failure it stands for."""
        if refused.code not in WAIT_CODES:
            return refused.failed
        if refused.code == 402:
            return Throttled(self.out_of_credits_wait, refused.failed)
        wait = refused.retry_after or self.rate_limited_wait * random.uniform(1.0, 1.5)
        wait = min(max(wait, self.rate_limited_wait), self.max_rate_limited_wait)
        return Throttled(wait, refused.failed)

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

    def _poll(self, task_id, request):
        style_name, _, upstream_id = task_id.partition(":")
        if f"{style_name}:" == UNCONFIRMED_PREFIX:
            return self._still_unconfirmed(request)
        style = STYLES.get(style_name)
        if style is None or not upstream_id:
            return Failed("unknown_task", f"{task_id!r} is not a task id of the image service.")
        try:
            with upstream_call("poll", _rate_limited):
                answer = self.client.call("GET", style.record_path, params={"taskId": upstream_id})
            state = style.read_record(answer_data(answer))
            if state.status == RUNNING:
                return Pending()
            if state.status == FAILED:
                return task_failure(state.fail_code, state.fail_message)
            if not state.result_url:
                return Failed("generation_failed", NO_IMAGE)
            return self._download(state.result_url)
        except Refused as refused:
            if refused.code == 422 and "null" in refused.upstream_message.lower():
                return self._not_visible_yet(task_id, request)
            # The task is already paid for upstream. A retryable Failed would send the
            # generation back to pending to be submitted (and paid) again: keep polling instead.
            if refused.failed.retryable:
                log.warning("polling kie task %s: %s", task_id, refused.failed.message)
                return Pending()
            return refused.failed

    def _still_unconfirmed(self, request):
        """A create whose answer was lost and whose callback has not named its task: wait the
        grace, then give the attempt up as retryable, so the image is created anew."""
        started = request.started_at
        now = datetime.now(UTC).replace(tzinfo=None)
        if started is None or (now - started).total_seconds() <= self.confirm_grace_seconds:
            return Pending()
        log.warning("kie never confirmed the create for %s; creating it again",
                    request.generation_id)
        return Failed("upstream_unconfirmed", UNCONFIRMED_MESSAGE, True)

    def _not_visible_yet(self, task_id, request):
        """kie answered "recordInfo is null": a task just created is not visible yet. Past a
        short grace it never will be, and polling it until the deadline would only keep the
        user waiting."""
        started = request.started_at
        now = datetime.now(UTC).replace(tzinfo=None)
        if started is None or (now - started).total_seconds() <= self.record_grace_seconds:
            return Pending()
        log.warning("kie task %s is still unknown to kie.ai; giving up on it", task_id)
        return Failed("task_not_found", LOST_TASK)

    def _upload(self, request):
        """Put the input on kie's file host, in a folder per batch; answers its URL."""
        found = image_format(request.input_image)
        if found is None:
            raise Refused(Failed("invalid_input", "The input image is not a readable image."))
        mime, extension = found
        folder = f"{UPLOAD_FOLDER}/{request.batch_id or 'photos'}"
        # One name per generation: a retry overwrites its own upload instead of adding one.
        file_name = f"{request.generation_id}.{extension}"
        with upstream_call("upload", _rate_limited):
            return self.client.upload(request.input_image, mime, file_name, folder)

    def _download(self, url):
        """Fetch a result from kie's CDN at once (its URLs expire) into our hands."""
        with upstream_call("download", _rate_limited):
            content = self.client.download(url)
        found = image_format(content)
        if found is None:
            message = "The image service sent a result that is not an image."
            return Failed("generation_failed", message)
        return Done(content, found[1])

    def _redact(self, outcome):
        """The outcome, with our API key blanked out of any message (kie may echo it)."""
        if isinstance(outcome, Failed) and self.api_key and self.api_key in outcome.message:
            message = outcome.message.replace(self.api_key, "***")
            return Failed(outcome.code, message, outcome.retryable)
        return outcome


def _rate_limited(error):
    """For the metrics: kie (or its CDN) answered 429."""
    return isinstance(error, Refused) and error.code == 429


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
