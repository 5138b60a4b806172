"""The catalog is data: complete, and priced in proportion to the upstream."""

import math
from decimal import Decimal

import pytest

from webapp.catalog import load_catalog, parse_catalog


def test_flux_2_at_1k_costs_three_stars():
    assert load_catalog().get("flux-2").price("1k") == 3


def test_at_least_six_image_to_image_models():
    assert len([model for model in load_catalog() if "i2i" in model.modes]) >= 6


@pytest.mark.parametrize("model", list(load_catalog()), ids=lambda model: model.id)
def test_every_price_is_the_upstream_price_in_stars_rounded_up(model):
    catalog = load_catalog()
    for quality, stars in model.prices.items():
        usd = Decimal(str(model.upstream_usd[quality]))
        assert stars == math.ceil(usd * catalog.stars_per_usd), (model.id, quality)


def test_a_catalog_with_an_unknown_quality_is_refused():
    text = """
stars_per_usd = 120
[[models]]
id = "m"
name = "M"
modes = ["i2i"]
default_aspect_ratio = "1:1"
qualities = { "8k" = { stars = 1, usd = 0.01 } }

[models.kie]
style = "jobs"
model = { i2i = "m" }
image_field = "image_urls"
aspect_field = "aspect_ratio"
aspect_ratios = ["1:1"]
"""
    with pytest.raises(ValueError, match="unknown qualities"):
        parse_catalog(text)


MODEL = """
stars_per_usd = 120
[[models]]
id = "m"
name = "M"
modes = ["i2i", "t2i"]
default_aspect_ratio = "1:1"
qualities = { "1k" = { stars = 3, usd = 0.025 }, "2k" = { stars = 5, usd = 0.035 } }

[models.kie]
style = "jobs"
model = { i2i = "m/edit", t2i = "m/draw" }
image_field = "image_urls"
aspect_field = "aspect_ratio"
aspect_ratios = ["1:1", "16:9"]
quality_field = "resolution"
qualities = { "1k" = "1K", "2k" = "2K" }
"""


def test_every_model_maps_to_kie_for_every_mode_it_offers():
    for model in load_catalog():
        assert set(model.modes) <= set(model.kie.models), model.id
        assert model.kie.image_field and model.kie.aspect_field, model.id


def test_the_offered_ratios_are_those_of_the_kie_mapping_in_its_order():
    model = parse_catalog(MODEL).get("m")

    assert model.aspect_ratios == ("1:1", "16:9")
    assert model.kie.aspect_ratios == {"1:1": "1:1", "16:9": "16:9"}


def test_translated_ratios_are_offered_under_our_names():
    qwen = load_catalog().get("qwen-image-edit")

    assert "16:9" in qwen.aspect_ratios
    assert qwen.kie.aspect_ratios["16:9"] == "landscape_16_9"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('qualities = { "1k" = "1K", "2k" = "2K" }', 'qualities = { "1k" = "1K" }'), "2k"),
        (('quality_field = "resolution"\n', ""), "several qualities"),
        (('model = { i2i = "m/edit", t2i = "m/draw" }', 'model = { i2i = "m/edit" }'), "t2i"),
        (('default_aspect_ratio = "1:1"', 'default_aspect_ratio = "4:3"'), "default aspect"),
        (("[models.kie]", "[models.elsewhere]"), "no \\[models.kie\\]"),
    ],
    ids=["untranslated-quality", "no-quality-field", "mode-without-kie-model", "default", "no-kie"],
)
def test_a_catalog_kie_cannot_run_is_refused(change, message):
    old, new = change

    with pytest.raises(ValueError, match=message):
        parse_catalog(MODEL.replace(old, new))
