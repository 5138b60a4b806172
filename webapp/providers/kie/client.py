"""The kie.ai transport: one pooled `requests` Session, explicit timeouts and User-Agent.

kie answers every call with `{"code", "msg", "data"}` and often reports errors as HTTP 200 with
a non-200 `code`, so both the body and the HTTP status are checked; a refusal is raised as
`Refused`, carrying our Failed for it (codes.py). Both kie hosts sit behind Cloudflare, which
turns away clients without a User-Agent of their own. See docs/kie.md.
"""

import base64
import logging
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from .. import RETRIED, Failed
from .codes import as_int, refusal

log = logging.getLogger(__name__)

USER_AGENT = "batchgen/0.1"
# The largest result we download: a 4k PNG is a few tens of MB.
MAX_RESULT_BYTES = 64 * 1024 * 1024
# Connections kept open per host: one per consumer thread, with room to spare.
POOL_SIZE = 16
UPLOAD_PATH = "/api/file-base64-upload"
CREDIT_PATH = "/api/v1/chat/credit"
# A dry call for `kie check`: reading a task that cannot exist creates and costs nothing, and
# kie answers it only once it has accepted the key.
PROBE_PATH = "/api/v1/jobs/recordInfo"
PROBE_TASK_ID = "batchgen-key-check"
# Answers to the probe that mean the key was accepted: no such task (404, or 422 "recordInfo
# is null"), or an account without credits (402).
KEY_ACCEPTED_CODES = {402, 404, 422}


class Refused(Exception):
    """A call to kie did not give what was asked: `failed` says why in our terms."""

    def __init__(
        self, failed, code=None, upstream_message="", retry_after=None, unanswered=False
    ):
        super().__init__(failed.message)
        self.failed = failed
        self.code = code
        self.upstream_message = upstream_message
        self.retry_after = retry_after  # seconds, from a Retry-After header
        # The request reached kie (or may have) and its answer was lost: a create may exist.
        self.unanswered = unanswered


class KieClient:
    """Authorised calls to kie's API and upload hosts, and plain downloads from its CDN."""

    def __init__(self, api_key, api_base, upload_base, session=None, timeout=(5, 30)):
        self.api_base = api_base.rstrip("/")
        self.upload_base = upload_base.rstrip("/")
        self.session = session or pooled_session()
        self.timeout = timeout  # (connect, read) seconds, on every call
        # Sent per call rather than set on the session, so the CDN never sees our key.
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}

    def call(self, method, path, base=None, **kwargs):
        """One authorised call; answers kie's JSON body or raises Refused."""
        try:
            response = self.session.request(
                method,
                (base or self.api_base) + path,
                headers=self.headers,
                timeout=self.timeout,
                **kwargs,
            )
        except requests.RequestException as error:
            raise Refused(transport_failure(error), unanswered=_may_have_arrived(error)) from None
        body = _json_object(response)
        body_code = as_int(body.get("code"))
        if body_code is not None and body_code != 200:
            code = body_code
        elif not response.ok:
            code = response.status_code
        elif not body:
            message = f"The image service sent an unreadable answer. {RETRIED}"
            raise Refused(Failed("upstream_unavailable", message, True))
        else:
            return body
        message = str(body.get("msg") or body.get("message") or "")
        _alert_operators(code, method, path, message)
        # A gateway's 5xx without kie's envelope (Cloudflare's 502, 504) says nothing of
        # whether kie got the request; kie's own code 500 is its answer.
        gateway = not body and response.status_code >= 500
        raise Refused(
            refusal(code, message), code, message, _retry_after(response), unanswered=gateway
        )

    def upload(self, image, mime, file_name, upload_path):
        """Put an image on kie's file host (generations take URLs only); answers its URL.

        The same fileName overwrites, so a retried attempt replaces its own upload.
        """
        encoded = base64.b64encode(image).decode("ascii")
        body = {
            "base64Data": f"data:{mime};base64,{encoded}",
            "uploadPath": upload_path,
            "fileName": file_name,
        }
        answer = self.call("POST", UPLOAD_PATH, base=self.upload_base, json=body)
        url = answer_data(answer).get("downloadUrl")
        if not url:
            message = f"The image service did not take the input image. {RETRIED}"
            raise Refused(Failed("upstream_error", message, True))
        return url

    def download(self, url):
        """A result's bytes from kie's CDN, fetched without our Authorization; raises Refused.

        Only http(s) links are followed, and at most MAX_RESULT_BYTES are read: a result larger
        than any image we make is refused, not held in memory.
        """
        if urlsplit(url).scheme not in ("http", "https"):
            message = "The image service sent a result link that is not http(s)."
            raise Refused(Failed("generation_failed", message))
        try:
            with self.session.get(
                url, headers={"User-Agent": USER_AGENT}, timeout=self.timeout, stream=True
            ) as response:
                status = response.status_code
                if status >= 500 or status == 429:
                    raise Refused(refusal(status, ""), status)
                if not response.ok:
                    message = f"The finished image could not be downloaded (HTTP {status})."
                    raise Refused(Failed("result_unavailable", message), status)
                return _read_bounded(response, MAX_RESULT_BYTES)
        except requests.RequestException as error:
            raise Refused(transport_failure(error)) from None

    def balance(self):
        """Our kie account's credit balance."""
        credits = as_int(self.call("GET", CREDIT_PATH).get("data"))
        if credits is None:
            raise Refused(Failed("upstream_error", "kie.ai answered without a balance."))
        return credits

    def verify_key(self):
        """A dry request that creates nothing; raises Refused unless kie accepted the key."""
        try:
            self.call("GET", PROBE_PATH, params={"taskId": PROBE_TASK_ID})
        except Refused as refused:
            if refused.code not in KEY_ACCEPTED_CODES:
                raise

    def close(self):
        self.session.close()


def pooled_session():
    """A Session whose connection pool has room for every consumer thread."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _read_bounded(response, limit):
    """The body of a streamed response, refused once it passes `limit` bytes."""
    chunks, size = [], 0
    for chunk in response.iter_content(chunk_size=256 * 1024):
        size += len(chunk)
        if size > limit:
            message = f"The image service sent a result larger than {limit // 2**20} MB."
            raise Refused(Failed("result_unavailable", message))
        chunks.append(chunk)
    return b"".join(chunks)


def answer_data(answer):
    """The `data` object of kie's envelope ({} when it is missing or not an object)."""
    data = answer.get("data")
    return data if isinstance(data, dict) else {}


def _may_have_arrived(error):
    """Whether a request that got no answer may have reached kie: yes after a read timeout or
    a connection dropped mid-answer; no when the connection was never made."""
    if isinstance(error, requests.ConnectTimeout):
        return False
    if isinstance(error, requests.ReadTimeout):
        return True
    if isinstance(error, requests.ConnectionError):
        reason = getattr(error.args[0], "reason", None) if error.args else None
        return not isinstance(reason, NewConnectionError)
    return False


def transport_failure(error):
    """The retryable Failed for a call that got no answer."""
    if isinstance(error, requests.Timeout):
        message = f"The image service did not answer in time. {RETRIED}"
        return Failed("upstream_timeout", message, True)
    log.warning("kie.ai unreachable: %s", type(error).__name__)
    message = f"The image service could not be reached. {RETRIED}"
    return Failed("upstream_unavailable", message, True)


def _json_object(response):
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _alert_operators(code, method, path, message):
    """401 and 402 are ours to fix, never the user's: say so loudly in the log."""
    if code == 401:
        log.error(
            "kie.ai rejected KIE_API_KEY on %s %s: %s (an operator must act)", method, path, message
        )
    elif code == 402:
        log.error(
            "kie.ai account is out of credits on %s %s: %s (top it up; images wait meanwhile, "
            "see `flask --app app kie balance`)",
            method,
            path,
            message,
        )


def _retry_after(response):
    """Seconds from a Retry-After header (a number or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
