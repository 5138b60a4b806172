"""One delivery attempt over HTTP, bounded: a timeout, no redirects, at most 1 KB read back."""

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests

TIMEOUT_SECONDS = 15
KEPT_BYTES = 1024
# Standard Webhooks' schedule: the delay before each attempt (the first one now).
SCHEDULE = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.1
USER_AGENT = "batchgen-webhooks/1"


@dataclass(frozen=True)
class Answer:
    status_code: int | None  # None: no answer (timeout, refused connection, bad address)
    error: str | None
    excerpt: str | None  # the start of the body, at most KEPT_BYTES
    retry_after: float | None
    duration_ms: int
    final: bool = False  # not sent, and never will be (the endpoint is gone): no retry

    @property
    def delivered(self):
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self):
        """410 Gone: the receiver asks never to be called again."""
        return self.status_code == 410

    @property
    def ends(self):
        """Nothing more will be tried: delivered, gone, or final."""
        return self.delivered or self.gone or self.final


def send(url, body, headers, timeout=TIMEOUT_SECONDS, session=requests):
    """POST `body` to `url`; the Answer, whatever happened (never raises for the network)."""
    started = time.monotonic()
    try:
        response = session.post(
            url,
            data=body.encode(),
            headers={**headers, "user-agent": USER_AGENT},
            timeout=timeout,
            allow_redirects=False,
            stream=True,
        )
    except requests.Timeout:
        return _no_answer("timed out", started)
    except requests.RequestException as error:
        return _no_answer(f"could not connect ({type(error).__name__})", started)
    with response:
        excerpt = _read_start(response)
        error = None if 200 <= response.status_code < 300 else f"answered {response.status_code}"
        if 300 <= response.status_code < 400:
            error = f"answered {response.status_code} (redirects are not followed)"
        return Answer(
            response.status_code,
            error,
            excerpt,
            retry_after_seconds(response.headers.get("Retry-After")),
            _elapsed_ms(started),
        )


def _read_start(response):
    kept = b""
    try:
        for chunk in response.iter_content(chunk_size=KEPT_BYTES):
            kept += chunk
            if len(kept) >= KEPT_BYTES:
                break
    except requests.RequestException:
        pass
    return kept[:KEPT_BYTES].decode("utf-8", "replace") or None


def _no_answer(error, started):
    return Answer(None, error, None, None, _elapsed_ms(started))


def _elapsed_ms(started):
    return int((time.monotonic() - started) * 1000)


def retry_after_seconds(value):
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def delay_before(index, schedule=SCHEDULE, retry_after=None):
    """Seconds to wait before attempt number `index` (0-based) of `schedule`, jittered by
    ±10%; at least what the receiver's Retry-After asked. None once the schedule is spent."""
    if index >= len(schedule):
        return None
    delay = schedule[index] * random.uniform(1 - JITTER, 1 + JITTER)
    return max(delay, retry_after or 0.0)
