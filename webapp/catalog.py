"""The model catalog (catalog.toml): models, modes, qualities, aspect ratios, prices, and how
kie.ai runs each model, which decides the ratios and qualities we offer."""

import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

CATALOG_PATH = Path(__file__).with_name("catalog.toml")

# Long side of the result, in pixels, per quality.
QUALITY_LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 4096}


@dataclass(frozen=True)
class KieMapping:
    """How one model is called on kie.ai: its API style, model ids and request fields."""

    style: str  # "jobs" | "kontext" | "gpt4o"
    models: dict[str, str]  # mode → kie's model id
    image_field: str
    single_image: bool  # the image field takes one URL, not a list
    aspect_field: str
    aspect_ratios: dict[str, str]  # our ratio → kie's value (in the order we offer them)
    quality_field: str | None
    qualities: dict[str, str]  # our quality → kie's value
    negative_prompt_field: str | None
    negative_prompt_max: int | None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    modes: tuple[str, ...]
    default_aspect_ratio: str
    prices: dict[str, int]
    upstream_usd: dict[str, float]
    kie: KieMapping = field(compare=False)

    @property
    def aspect_ratios(self):
        """The ratios kie can do for this model: the only ones we offer."""
        return tuple(self.kie.aspect_ratios)

    @property
    def qualities(self):
        return tuple(self.prices)

    @property
    def default_quality(self):
        return self.qualities[0]

    @property
    def negative_prompt_max(self):
        """The longest negative prompt the model takes (None: no limit of its own)."""
        return self.kie.negative_prompt_max

    def offered_quality(self, quality):
        """`quality` if this model offers it, else its default (it was chosen for another)."""
        return quality if quality in self.qualities else self.default_quality

    def offered_aspect_ratio(self, ratio):
        """`ratio` if this model offers it, else its default."""
        return ratio if ratio in self.aspect_ratios else self.default_aspect_ratio

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

    def model_for(self, model_id, mode):
        """The model named if it does `mode`, else the catalog's first that does."""
        model = self.models.get(model_id or "")
        if model is not None and mode in model.modes:
            return model
        return next(model for model in self if mode in model.modes)

    def __iter__(self):
        return iter(self.models.values())


def parse_catalog(text):
    """Build a Catalog from TOML text, checking it is complete and that kie can run it."""
    raw = tomllib.loads(text)
    models = {}
    for entry in raw["models"]:
        model_id = entry["id"]
        qualities = entry["qualities"]
        unknown = set(qualities) - set(QUALITY_LONG_SIDE)
        if unknown:
            raise ValueError(f"{model_id}: unknown qualities {sorted(unknown)}")
        if "kie" not in entry:
            raise ValueError(f"{model_id}: no [models.kie] mapping")
        kie = _parse_kie(model_id, entry["kie"], tuple(entry["modes"]), tuple(qualities))
        if entry["default_aspect_ratio"] not in kie.aspect_ratios:
            raise ValueError(f"{model_id}: default aspect ratio is not offered")
        models[model_id] = Model(
            id=model_id,
            name=entry["name"],
            modes=tuple(entry["modes"]),
            default_aspect_ratio=entry["default_aspect_ratio"],
            prices={q: int(v["stars"]) for q, v in qualities.items()},
            upstream_usd={q: float(v["usd"]) for q, v in qualities.items()},
            kie=kie,
        )
    return Catalog(stars_per_usd=int(raw["stars_per_usd"]), models=models)


def _parse_kie(model_id, raw, modes, qualities):
    """The model's kie mapping, refusing one that cannot run every mode and quality we sell."""
    missing_modes = [mode for mode in modes if mode not in raw["model"]]
    if missing_modes:
        raise ValueError(f"{model_id}: no kie model for {missing_modes}")
    ratios = raw["aspect_ratios"]
    if not isinstance(ratios, dict):
        ratios = {ratio: ratio for ratio in ratios}  # sent as they are
    if not ratios:
        raise ValueError(f"{model_id}: kie offers no aspect ratio")
    quality_field = raw.get("quality_field")
    kie_qualities = raw.get("qualities", {})
    if quality_field:
        untranslated = [quality for quality in qualities if quality not in kie_qualities]
        if untranslated:
            raise ValueError(f"{model_id}: kie has no value for qualities {untranslated}")
    elif len(qualities) != 1:
        # Without a quality field two prices would buy the same upstream request.
        raise ValueError(f"{model_id}: several qualities but no kie quality_field")
    negative_field = raw.get("negative_prompt_field")
    if raw.get("negative_prompt_max") and not negative_field:
        raise ValueError(f"{model_id}: negative_prompt_max without negative_prompt_field")
    return KieMapping(
        style=raw["style"],
        models=dict(raw["model"]),
        image_field=raw["image_field"],
        single_image=bool(raw.get("single_image", False)),
        aspect_field=raw["aspect_field"],
        aspect_ratios=dict(ratios),
        quality_field=quality_field,
        qualities=dict(kie_qualities),
        negative_prompt_field=negative_field,
        negative_prompt_max=raw.get("negative_prompt_max"),
        extra=dict(raw.get("extra", {})),
    )


@cache
def load_catalog():
    """The catalog shipped with the app, read once per process."""
    return parse_catalog(CATALOG_PATH.read_text(encoding="utf-8"))
