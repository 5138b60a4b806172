"""What the kie.ai unit tests share: mocked hosts, requests for catalog models, answers."""

import io
import json

from PIL import Image

from webapp.catalog import load_catalog
from webapp.providers import GenerationRequest

API = "https://api.kie.test"
UPLOAD = "https://upload.kie.test"
KEY = "sk-test-secret-key"
CREATE = f"{API}/api/v1/jobs/createTask"
RECORD = f"{API}/api/v1/jobs/recordInfo"
KONTEXT = f"{API}/api/v1/flux/kontext/generate"
KONTEXT_RECORD = f"{API}/api/v1/flux/kontext/record-info"
GPT4O = f"{API}/api/v1/gpt4o-image/generate"
GPT4O_RECORD = f"{API}/api/v1/gpt4o-image/record-info"
CREDIT = f"{API}/api/v1/chat/credit"
UPLOAD_URL = f"{UPLOAD}/api/file-base64-upload"
INPUT_URL = "https://files.kie.test/batchgen/gen-1.png"
RESULT_URL = "https://cdn.kie.test/results/out.png"


def image_bytes(image_format="PNG", size=(8, 6)):
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, image_format)
    return buffer.getvalue()


PNG = image_bytes()


def make_request(
    model_id,
    mode="i2i",
    *,
    prompt="white background",
    negative_prompt=None,
    quality=None,
    aspect_ratio=None,
    input_image=PNG,
    batch_id=None,
    started_at=None,
):
    model = load_catalog().get(model_id)
    return GenerationRequest(
        generation_id="gen-1",
        model=model,
        mode=mode,
        prompt=prompt,
        negative_prompt=negative_prompt,
        quality=quality or model.default_quality,
        aspect_ratio=aspect_ratio or model.default_aspect_ratio,
        input_image=input_image if mode == "i2i" else None,
        batch_id=batch_id,
        started_at=started_at,
    )


def sent_json(call):
    return json.loads(call.request.body)


def add_upload(kie_mock, url=INPUT_URL):
    kie_mock.post(
        UPLOAD_URL,
        json={"success": True, "code": 200, "msg": "ok", "data": {"downloadUrl": url}},
    )


def add_created(kie_mock, endpoint=CREATE, task_id="task-1"):
    kie_mock.post(endpoint, json={"code": 200, "msg": "success", "data": {"taskId": task_id}})


def add_record(kie_mock, data, endpoint=RECORD):
    kie_mock.get(endpoint, json={"code": 200, "msg": "success", "data": data})


def add_result(kie_mock, body=PNG, url=RESULT_URL):
    kie_mock.get(url, body=body, content_type="image/png")
