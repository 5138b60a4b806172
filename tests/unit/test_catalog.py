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
aspect_ratios = ["1:1"]
default_aspect_ratio = "1:1"
qualities = { "8k" = { stars = 1, usd = 0.01 } }
"""
    with pytest.raises(ValueError, match="unknown qualities"):
        parse_catalog(text)
