"""Pure pieces of the kie.ai engine: its three API styles, the create bodies built from the
catalog's mapping, and the task records each style answers, read into one TaskState.

Sources disagree on some shapes (docs/kie.md), so the readers accept every form
named there: `resultJson` as a JSON string or an object, `resultUrls` or `result_urls`.
"""

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .codes import as_int

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
JOBS_RUNNING_STATES = {"waiting", "queuing", "generating"}
GPT4O_FAILED_STATES = {"CREATE_TASK_FAILED", "GENERATE_FAILED"}


@dataclass(frozen=True)
class TaskState:
    """What kie says about one task, whatever its API style."""

    status: str  # RUNNING | SUCCEEDED | FAILED
    result_url: str | None = None
    fail_code: object = None
    fail_message: str | None = None


def read_jobs_record(data):
    """A jobs-API recordInfo `data`: `state`, `resultJson`, `failCode`, `failMsg`."""
    state = data.get("state")
    if state == "success":
        return TaskState(SUCCEEDED, _first_url(_json_object(data.get("resultJson"))))
    if state == "fail":
        return TaskState(FAILED, fail_code=data.get("failCode"), fail_message=data.get("failMsg"))
    if state not in JOBS_RUNNING_STATES:
        log.warning("kie task %s has unexpected state %r", data.get("taskId"), state)
    return TaskState(RUNNING)


def read_kontext_record(data):
    """A Flux Kontext record-info `data`: `successFlag` 0 running, 1 done, 2 and 3 failed."""
    flag = as_int(data.get("successFlag"))
    if flag == 1:
        response = _json_object(data.get("response"))
        return TaskState(SUCCEEDED, _string(response.get("resultImageUrl")))
    if flag in (2, 3):
        return _failed(data)
    return TaskState(RUNNING)


def read_gpt4o_record(data):
    """A 4o image record-info `data`: `status` GENERATING, SUCCESS or one of the failures."""
    status = data.get("status")
    if status == "SUCCESS":
        return TaskState(SUCCEEDED, _first_url(_json_object(data.get("response"))))
    if status in GPT4O_FAILED_STATES:
        return _failed(data)
    return TaskState(RUNNING)


@dataclass(frozen=True)
class ApiStyle:
    """One of kie's API styles: where tasks are created and read, and how a body is laid out."""

    create_path: str
    record_path: str
    read_record: Callable[[dict], TaskState]
    nests_input: bool  # the jobs API puts the model's fields under "input"
    sends_model: bool  # the 4o endpoint serves one model and takes no model field


# Our provider_task_id is "<style>:<kie task id>", so a poll knows which endpoint to ask.
STYLES = {
    "jobs": ApiStyle(
        "/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo", read_jobs_record, True, True
    ),
    "kontext": ApiStyle(
        "/api/v1/flux/kontext/generate",
        "/api/v1/flux/kontext/record-info",
        read_kontext_record,
        False,
        True,
    ),
    "gpt4o": ApiStyle(
        "/api/v1/gpt4o-image/generate",
        "/api/v1/gpt4o-image/record-info",
        read_gpt4o_record,
        False,
        False,
    ),
}


def stored_task_ids(kie_task_id):
    """Every provider_task_id a kie task id may be stored under (one per API style)."""
    return [f"{style}:{kie_task_id}" for style in STYLES]


def unsupported(request):
    """Why the model's kie mapping cannot run this request (None if it can).

    The API refuses such requests before charging; this guards rows written before the catalog
    changed, so they fail cleanly instead of with a KeyError.
    """
    kie = request.model.kie
    if kie.style not in STYLES:
        return (
            f"{request.model.name} names an unknown API style of the image service "
            f"({kie.style})."
        )
    if request.mode not in kie.models:
        return f"{request.model.name} does not offer {request.mode} with this image service."
    if request.aspect_ratio not in kie.aspect_ratios:
        return f"{request.model.name} cannot make the aspect ratio {request.aspect_ratio}."
    if kie.quality_field and request.quality not in kie.qualities:
        return f"{request.model.name} cannot make the quality {request.quality}."
    return None


def create_body(request, image_url, callback_url=None):
    """The create body for the request's model, in its API style, every required field set."""
    kie = request.model.kie
    style = STYLES[kie.style]
    fields = {**kie.extra, "prompt": request.prompt}
    if image_url is not None:
        fields[kie.image_field] = image_url if kie.single_image else [image_url]
    fields[kie.aspect_field] = kie.aspect_ratios[request.aspect_ratio]
    if kie.quality_field:
        fields[kie.quality_field] = kie.qualities[request.quality]
    if kie.negative_prompt_field and request.negative_prompt:
        fields[kie.negative_prompt_field] = request.negative_prompt
    model_id = kie.models[request.mode]
    if style.nests_input:
        body = {"model": model_id, "input": fields}
    elif style.sends_model:
        body = {"model": model_id, **fields}
    else:
        body = fields
    if callback_url:
        body["callBackUrl"] = callback_url
    return body


def _failed(data):
    return TaskState(FAILED, fail_code=data.get("errorCode"), fail_message=data.get("errorMessage"))


def _json_object(value):
    """A dict from kie's JSON-string-or-object fields ({} for anything else)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def _first_url(result):
    """The first of `resultUrls` (or `result_urls`), which may also come as one string."""
    urls = result.get("resultUrls") or result.get("result_urls")
    if isinstance(urls, list):
        urls = urls[0] if urls else None
    return _string(urls)


def _string(value):
    return value if isinstance(value, str) and value else None
