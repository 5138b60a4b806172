"""The model catalog (catalog.toml): models, modes, qualities, aspect ratios and prices."""

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("catalog.toml")

# Long side of the result, in pixels, per quality.
QUALITY_LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 4096}


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    modes: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    default_aspect_ratio: str
    prices: dict[str, int]
    upstream_usd: dict[str, float]
    upstream: dict = field(default_factory=dict, compare=False)

    @property
    def qualities(self):
        return tuple(self.prices)

    @property
    def default_quality(self):
        return self.qualities[0]

    def price(self, quality):
        """Stars for one image at this quality."""
        return self.prices[quality]

    def to_json(self):
        return {
            "id": self.id,
            "name": self.name,
            "modes": list(self.modes),
            "qualities": list(self.qualities),
            "aspectRatios": list(self.aspect_ratios),
            "defaultQuality": self.default_quality,
            "defaultAspectRatio": self.default_aspect_ratio,
            "prices": dict(self.prices),
        }


@dataclass(frozen=True)
class Catalog:
    stars_per_usd: int
    models: dict[str, Model]

    def get(self, model_id):
        return self.models.get(model_id)

    def __iter__(self):
        return iter(self.models.values())


def parse_catalog(text):
    """Build a Catalog from TOML text, checking it is complete."""
    raw = tomllib.loads(text)
    models = {}
    for entry in raw["models"]:
        qualities = entry["qualities"]
        unknown = set(qualities) - set(QUALITY_LONG_SIDE)
        if unknown:
            raise ValueError(f"{entry['id']}: unknown qualities {sorted(unknown)}")
        if entry["default_aspect_ratio"] not in entry["aspect_ratios"]:
            raise ValueError(f"{entry['id']}: default aspect ratio is not offered")
        models[entry["id"]] = Model(
            id=entry["id"],
            name=entry["name"],
            modes=tuple(entry["modes"]),
            aspect_ratios=tuple(entry["aspect_ratios"]),
            default_aspect_ratio=entry["default_aspect_ratio"],
            prices={q: int(v["stars"]) for q, v in qualities.items()},
            upstream_usd={q: float(v["usd"]) for q, v in qualities.items()},
            upstream=entry.get("upstream", {}),
        )
    return Catalog(stars_per_usd=int(raw["stars_per_usd"]), models=models)


@cache
def load_catalog():
    """The catalog shipped with the app, read once per process."""
    return parse_catalog(CATALOG_PATH.read_text(encoding="utf-8"))
