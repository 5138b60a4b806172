"""POST /api/callbacks/kie: kie.ai says a task finished, so poll it now rather than at its turn.

The callback only shortens the wait, and names the task of a create whose answer was lost
(each callBackUrl names its attempt, signed with SECRET_KEY). Its body is never trusted for the
result: the poll it rings asks kie itself, as a scheduled poll would, so a forged or replayed
callback can at most make us ask early. That is also why an unsigned callback is accepted when no
KIE_WEBHOOK_HMAC_KEY is set. Unknown or finished tasks answer 200 (anything else makes kie
retry for nothing), so a duplicate callback finds nothing waiting and changes nothing.
"""

import re
import time

from flask import current_app, jsonify, request

from tasks import get_queue

from ..errors import json_error
from ..generation.callbacks import adopt_upstream_task, generation_awaiting
from ..generation.validation import ValidationError
from ..providers.kie.callbacks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    attempt_named,
    callback_task_id,
    signature_is_valid,
)
from ..providers.kie.payloads import stored_task_ids
from .json_body import parse_json

# kie's task ids are short printable text; we store them with a style prefix in 128 characters.
TASK_ID = re.compile(r"[\x21-\x7e]{1,100}")


def kie_callback():
    """Verify the callback, then ring one poll of the generation waiting on its task."""
    try:
        payload = parse_json(request.stream, request.content_length)
    except ValidationError as error:
        return json_error(f"The callback could not be read: {error.message}", 400)
    task_id = callback_task_id(payload)
    if task_id is None:
        return json_error("The callback names no task (data.taskId, data.task_id or taskId)", 400)
    if not TASK_ID.fullmatch(task_id):
        return json_error("The callback's task id is not one kie.ai gives (printable ASCII)", 400)
    key = current_app.config["KIE_WEBHOOK_HMAC_KEY"]
    if key and not signature_is_valid(
        key,
        task_id,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        time.time(),
    ):
        return json_error("The webhook signature is missing, invalid or too old", 401)
    named = attempt_named(current_app.config["SECRET_KEY"], request.args)
    if named:
        generation_id, attempt, style = named
        generation_id = adopt_upstream_task(generation_id, attempt, f"{style}:{task_id}")
    else:
        generation_id = generation_awaiting(stored_task_ids(task_id))
    if generation_id is not None:
        get_queue(current_app).poll_now(generation_id)
    return jsonify(received=True, taskId=task_id, polling=generation_id is not None)
