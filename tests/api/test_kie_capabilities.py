"""What kie.ai cannot do for a model is refused by our API with 400, before charging, whatever
the engine: the catalog's kie mapping decides which ratios and qualities are offered."""

import pytest

from tests.support import ApiClient, batch_body, create_user, media_files
from webapp.catalog import load_catalog

ALL_RATIOS = sorted({ratio for model in load_catalog() for ratio in model.aspect_ratios})
ALL_QUALITIES = ["1k", "2k", "4k"]
I2I_MODELS = [model for model in load_catalog() if "i2i" in model.modes]


def assert_refused_without_charging(app, api_client, response, field):
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["field"] == field
    assert api_client.ledger() == [("grant", 100)]
    assert media_files(app) == []


@pytest.mark.parametrize(
    ("model_id", "changes", "field"),
    [
        ("gpt-image-1.5", {"aspectRatio": "16:9"}, "aspectRatio"),
        ("gpt-4o-image", {"aspectRatio": "auto"}, "aspectRatio"),
        ("flux-kontext-pro", {"aspectRatio": "auto"}, "aspectRatio"),
        ("flux-kontext-max", {"quality": "2k"}, "quality"),
        ("qwen-image-edit", {"aspectRatio": "21:9"}, "aspectRatio"),
        ("seedream-4.5", {"quality": "1k"}, "quality"),
        ("nano-banana", {"quality": "4k"}, "quality"),
        ("flux-2", {"quality": "4k"}, "quality"),
    ],
)
def test_a_ratio_or_quality_kie_cannot_do_is_refused_before_charging(
    app, api_client, model_id, changes, field
):
    response = api_client.post("/api/generate/batch", json=batch_body(1, model=model_id, **changes))

    assert_refused_without_charging(app, api_client, response, field)


@pytest.mark.parametrize("model", I2I_MODELS, ids=lambda model: model.id)
def test_exactly_what_the_kie_mapping_can_express_is_accepted(app, model):
    api_client = ApiClient(app, *create_user(app, credits=10_000))
    kie = model.kie
    for quality in ALL_QUALITIES:
        for ratio in ALL_RATIOS:
            body = batch_body(1, model=model.id, quality=quality, aspectRatio=ratio)
            status = api_client.post("/api/generate/batch", json=body).status_code
            kie_can = ratio in kie.aspect_ratios and (
                quality in kie.qualities if kie.quality_field else quality == model.default_quality
            )
            assert status == (200 if kie_can else 400), (quality, ratio, status)


def test_a_negative_prompt_longer_than_qwen_takes_is_refused(app, api_client):
    body = batch_body(1, model="qwen-image-edit", negativePrompt="x" * 501)

    response = api_client.post("/api/generate/batch", json=body)

    assert_refused_without_charging(app, api_client, response, "negativePrompt")
    assert "500" in response.get_json()["error"]


def test_a_negative_prompt_qwen_can_take_is_accepted(api_client):
    body = batch_body(1, model="qwen-image-edit", negativePrompt="x" * 500)

    assert api_client.post("/api/generate/batch", json=body).status_code == 200


def test_a_negative_prompt_for_a_model_without_one_is_accepted_and_left_out_upstream(api_client):
    body = batch_body(1, model="flux-2", negativePrompt="x" * 1000)

    assert api_client.post("/api/generate/batch", json=body).status_code == 200
