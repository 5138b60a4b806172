"""kie.ai's error codes (in the body or as the HTTP status) as our Failed outcomes. Pure.

See the code table of docs/kie.md. The codes in WAIT_CODES create nothing upstream
and only need time; the kie engine answers them with Throttled rather than a failure.
"""

import re

from .. import RETRIED, Failed

MAX_DETAIL = 300

# kie's body (or HTTP) code → our error code, whether to retry, and what to tell a person: what
# happened and what to do, in words that do not name the vendor (a person deals with us, and
# "kie.ai" means nothing to them). {detail} is kie's own message in brackets, when there is one.
CODES = {
    400: (
        "content_policy",
        False,
        "The image service refused the prompt or image under its content policy{detail}. "
        "The same prompt and image would be refused again: change the prompt or the image.",
    ),
    401: (
        "upstream_auth",
        False,
        "The image service did not accept this site's key (a problem on our side, not with "
        "your request); an operator has to fix it before images can be made.",
    ),
    # Our kie account is out of credits: an operator tops it up; the user did nothing wrong,
    # so kie's message (which says "your balance") is not shown.
    402: (
        "upstream_unavailable",
        True,
        "The image service is temporarily unavailable on our side "
        "(not a problem with your request). {retried}",
    ),
    404: (
        "upstream_rejected",
        False,
        "The image service does not offer this model now{detail}. Choose another model.",
    ),
    422: (
        "invalid_input",
        False,
        "The image service rejected the request{detail}. Check the prompt, aspect ratio and image.",
    ),
    429: ("rate_limited", True, "The image service is busy with too many requests. {retried}"),
    433: ("rate_limited", True, "The image service's request limit was reached. {retried}"),
    451: (
        "invalid_input",
        False,
        "The image service could not read the input image{detail}. Try another image.",
    ),
    455: ("upstream_unavailable", True, "The image service is under maintenance. {retried}"),
    500: ("upstream_error", True, "The image service had a server error{detail}. {retried}"),
    501: (
        "generation_failed",
        False,
        "The image service could not make this image{detail}. Retry it, or change the prompt "
        "or the image.",
    ),
    505: (
        "upstream_rejected",
        False,
        "The image service has switched this feature off{detail}. Choose another model.",
    ),
    550: ("upstream_unavailable", True, "The image service's queue is full. {retried}"),
}

# Refusals of a create that mean "not now": rate limits (the request was dropped, not queued)
# and our kie account being empty. Retried later without spending an attempt.
WAIT_CODES = {402, 429, 433}

# The codes a failed task may carry that mean more than "generation failed".
TASK_CODES = {400, 422, 429, 433, 451, 455, 500, 501, 550}

_CONTENT_POLICY = re.compile(
    r"content.?polic|nsfw|sensitive|safety|moderat|prohibited|violat|flagged|inappropriate",
    re.IGNORECASE,
)


def refusal(code, message):
    """A Failed for a kie code (from the body or HTTP) on a call that was refused."""
    # kie sometimes reports a content-policy refusal as a 500 or 422 with a telling message.
    if code not in (401, 402) and _CONTENT_POLICY.search(message or ""):
        code = 400
    if code in CODES:
        error_code, retryable, template = CODES[code]
        text = template.format(detail=_detail(message), retried=RETRIED)
        return Failed(error_code, text, retryable)
    if code >= 500:
        return Failed(
            "upstream_unavailable",
            f"The image service is unavailable (HTTP {code}). {RETRIED}",
            True,
        )
    return Failed(
        "upstream_error", f"The image service refused the request (code {code}){_detail(message)}."
    )


def task_failure(code, message):
    """A Failed for a task kie ran and reported failed (failCode/errorCode and its message)."""
    number = as_int(code)
    return refusal(number if number in TASK_CODES else 501, message)


def _detail(message):
    message = " ".join(str(message or "").split())
    if not message:
        return ""
    if len(message) > MAX_DETAIL:
        message = message[: MAX_DETAIL - 1] + "…"
    return f" ({message})"


def as_int(value):
    """An int from kie's int-or-string codes, or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
