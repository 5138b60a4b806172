"""Turns a client's JSON into a checked spec, before any money moves. Pure functions.

The web form's own parsing (several errors at once, uploaded files) is webapp.web.upload_form,
built on these.
"""

import base64
import binascii
import io
import re
from dataclasses import dataclass

from PIL import Image

from ..catalog import Model
from ..webhooks.addresses import AddressRefused, check_syntax

DATA_URL = re.compile(r"^data:image/(?P<kind>png|jpeg|jpg|webp);base64,", re.IGNORECASE)
PILLOW_FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp"}
MAX_PROMPT_CHARS = 4000
MAX_CLIENT_ID_CHARS = 200
# Text may hold tabs and line breaks; no other control character (PostgreSQL stores no NUL).
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTROL_IN_ID = re.compile(r"[\x00-\x1f\x7f]")


class ValidationError(Exception):
    """A request the API must refuse, naming the field that is wrong."""

    def __init__(self, message, field=None):
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Limits:
    max_images: int
    max_image_bytes: int
    max_pixels: int
    default_concurrency: int
    max_concurrency: int

    @classmethod
    def from_config(cls, config):
        return cls(
            max_images=config["MAX_BATCH_IMAGES"],
            max_image_bytes=config["MAX_IMAGE_BYTES"],
            max_pixels=config["MAX_IMAGE_PIXELS"],
            default_concurrency=config["DEFAULT_CONCURRENCY"],
            max_concurrency=config["MAX_CONCURRENCY"],
        )


@dataclass(frozen=True)
class ImageInput:
    client_id: str | None
    data: bytes
    extension: str
    width: int
    height: int


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate, shared by batches and single photos."""

    model: Model
    mode: str
    prompt: str
    negative_prompt: str | None
    quality: str
    aspect_ratio: str

    @property
    def price(self):
        return self.model.price(self.quality)


@dataclass(frozen=True)
class BatchSpec:
    generation: GenerationSpec
    concurrency: int
    images: tuple[ImageInput, ...]
    # Where this batch's webhooks go; request time checks only its form (webhooks/addresses).
    callback_url: str | None = None
    canary: int | None = None  # images tried first, checked by generation/canary.py

    @property
    def total_cost(self):
        return self.generation.price * len(self.images)


@dataclass(frozen=True)
class PhotoSpec:
    generation: GenerationSpec
    image: ImageInput | None


def parse_batch_request(payload, catalog, limits):
    """Check a POST /api/generate/batch body; answer a BatchSpec or raise ValidationError."""
    payload = _require_object(payload)
    generation = _parse_generation(payload, catalog, mode="i2i")
    images = payload.get("images")
    if images is None:
        raise ValidationError("images is required: a list of {id, data} objects", "images")
    if not isinstance(images, list):
        raise ValidationError("images must be a list of {id, data} objects", "images")
    if not images:
        raise ValidationError("images must not be empty", "images")
    if len(images) > limits.max_images:
        raise ValidationError(
            f"images has {len(images)} items; at most {limits.max_images} are allowed", "images"
        )
    seen = set()
    decoded = []
    for index, item in enumerate(images):
        field = f"images[{index}]"
        if not isinstance(item, dict):
            raise ValidationError(f"{field} must be an object with id and data", field)
        client_id = item.get("id")
        if isinstance(client_id, int) and not isinstance(client_id, bool):
            client_id = str(client_id)
        if not isinstance(client_id, str) or not client_id.strip():
            raise ValidationError(f"{field}.id must be a non-empty string", f"{field}.id")
        if len(client_id) > MAX_CLIENT_ID_CHARS:
            raise ValidationError(
                f"{field}.id is longer than {MAX_CLIENT_ID_CHARS} characters", f"{field}.id"
            )
        if CONTROL_IN_ID.search(client_id):
            raise ValidationError(
                f"{field}.id contains a control character (such as NUL or a line break)",
                f"{field}.id",
            )
        if client_id in seen:
            raise ValidationError(f"{field}.id {client_id!r} is used twice", f"{field}.id")
        seen.add(client_id)
        # Popped, so each encoded image is freed once decoded: a batch is held once, not twice.
        decoded.append(decode_image(item.pop("data", None), f"{field}.data", limits, client_id))
    return BatchSpec(
        generation=generation,
        concurrency=parse_concurrency(payload.get("concurrency"), limits),
        images=tuple(decoded),
        callback_url=_parse_callback_url(payload.get("callbackUrl")),
    )


def _parse_callback_url(value):
    """The optional callbackUrl: an http(s) URL (where it points is checked by the caller,
    which resolves it: generation/webhook_endpoints.check_webhook_url)."""
    if value is None:
        return None
    try:
        check_syntax(value)
    except AddressRefused as refused:
        raise ValidationError(f"callbackUrl {refused.message}", "callbackUrl") from None
    return value


def parse_upload_settings(fields, catalog):
    """A batch's prompt, model, quality and aspect ratio (the API's field names), checked as the
    API checks them: for the upload form, and for a retry of a batch made earlier."""
    return _parse_generation(fields, catalog, mode="i2i")


def parse_photo_request(payload, catalog, limits):
    """Check a POST /api/generate/photo body; answer a PhotoSpec or raise ValidationError."""
    payload = _require_object(payload)
    mode = payload.get("mode", "i2i")
    if mode not in ("i2i", "t2i"):
        raise ValidationError("mode must be 'i2i' or 't2i'", "mode")
    generation = _parse_generation(payload, catalog, mode=mode)
    image = None
    if mode == "i2i":
        image = decode_image(payload.get("referenceImage"), "referenceImage", limits)
    return PhotoSpec(generation=generation, image=image)


def decode_image(data_url, field, limits, client_id=None):
    """Decode a base64 data URL and prove with Pillow that it is the image it claims to be."""
    if not isinstance(data_url, str) or not data_url:
        raise ValidationError(
            f"{field} is required: a base64 data URL of a PNG, JPEG or WebP", field
        )
    match = DATA_URL.match(data_url)
    if not match:
        raise ValidationError(
            f"{field} is not a base64 data URL of PNG, JPEG or WebP "
            "(expected data:image/png;base64,...)",
            field,
        )
    encoded = data_url[match.end():]
    # Checking the encoded length first means an oversized image is refused before decoding.
    if len(encoded) * 3 // 4 > limits.max_image_bytes + 3:
        raise ValidationError(_too_big(field, limits), field)
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{field} is not valid base64", field) from None
    return check_image(raw, field, limits, client_id, PILLOW_FORMATS[match.group("kind").lower()])


def check_image(raw, field, limits, client_id=None, expected_format=None):
    """Prove with Pillow that `raw` is a whole PNG, JPEG or WebP (or `expected_format`) image
    within the byte and pixel limits, every pixel decoded; answers an ImageInput.

    A PNG or WebP with bytes after its end (an HTML tail that makes it a polyglot, say) is
    refused: the image is all we store. A JPEG may carry more after its first image (phones
    store MPO pictures and previews there), so its tail is kept, and served as an image only.
    """
    if not raw:
        raise ValidationError(f"{field} is empty", field)
    if len(raw) > limits.max_image_bytes:
        raise ValidationError(_too_big(field, limits), field)
    formats = [expected_format] if expected_format else list(EXTENSIONS)
    described = expected_format or "PNG, JPEG or WebP"
    try:
        with Image.open(io.BytesIO(raw), formats=formats) as image:
            found_format = image.format
            width, height = image.size
        # The header is all Pillow has read: refuse a bomb before a pixel is decoded.
        if width * height > limits.max_pixels:
            raise ValidationError(_too_many_pixels(field, width, height, limits), field)
        end = _decode_fully(raw, found_format)
    except ValidationError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own bound, past ours; only a warning outside the tests' warning filter.
        raise ValidationError(_too_many_pixels(field, None, None, limits), field) from None
    except Exception:
        # Pillow raises many types for corrupt data; to the client they all mean one thing.
        raise ValidationError(f"{field} is not a readable {described} image", field) from None
    if end is not None and end != len(raw):
        extra = len(raw) - end
        raise ValidationError(
            f"{field} has {extra:,} bytes after the end of its {found_format} image; "
            "send the image alone",
            field,
        )
    return ImageInput(client_id, raw, EXTENSIONS[found_format], width, height)


def _decode_fully(raw, image_format):
    """Decode every pixel, so a truncated or corrupt file is caught now; answers the offset
    where the image ends (None for a JPEG, whose tail is not ours to judge)."""
    end = None
    if image_format == "PNG":
        stream = io.BytesIO(raw)
        with Image.open(stream, formats=["PNG"]) as image:
            image.verify()  # every chunk's CRC, up to IEND
        end = stream.tell() + 4  # IEND's CRC
    elif image_format == "WEBP":
        end = int.from_bytes(raw[4:8], "little") + 8  # the RIFF header's size, plus itself
    with Image.open(io.BytesIO(raw), formats=[image_format]) as image:
        if image_format == "JPEG":
            # Decoding at 1/8 scale still reads the whole stream, at a fraction of the cost.
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()  # inflates the pixels: corrupt compressed data fails here
    return end


def _too_big(field, limits):
    return f"{field} is larger than {limits.max_image_bytes // (1024 * 1024)} MB"


def _too_many_pixels(field, width, height, limits):
    size = f" ({width}×{height})" if width else ""
    return f"{field} has too many pixels{size}; at most {limits.max_pixels:,} are allowed"


def _require_object(payload):
    if not isinstance(payload, dict):
        raise ValidationError("The body must be a JSON object", "body")
    return payload


def _parse_generation(payload, catalog, mode):
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError("prompt is required and must not be empty", "prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(f"prompt is longer than {MAX_PROMPT_CHARS} characters", "prompt")
    _refuse_control_characters(prompt, "prompt")
    negative_prompt = payload.get("negativePrompt")
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise ValidationError("negativePrompt must be a string", "negativePrompt")
    if negative_prompt and len(negative_prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            f"negativePrompt is longer than {MAX_PROMPT_CHARS} characters", "negativePrompt"
        )
    if negative_prompt:
        _refuse_control_characters(negative_prompt, "negativePrompt")
    model_id = payload.get("model")
    if not isinstance(model_id, str) or not model_id:
        raise ValidationError("model is required (see GET /api/models)", "model")
    model = catalog.get(model_id)
    if model is None:
        raise ValidationError(f"model {model_id!r} is unknown (see GET /api/models)", "model")
    if mode not in model.modes:
        what = "image-to-image (i2i)" if mode == "i2i" else "text-to-image (t2i)"
        raise ValidationError(f"model {model_id!r} does not support {what}", "model")
    negative_limit = model.negative_prompt_max
    if negative_prompt and negative_limit and len(negative_prompt.strip()) > negative_limit:
        raise ValidationError(
            f"negativePrompt is longer than {negative_limit} characters, the most {model_id} "
            "accepts",
            "negativePrompt",
        )
    quality = payload.get("quality") or model.default_quality
    if quality not in model.qualities:
        raise ValidationError(
            f"quality {quality!r} is not offered by {model_id}; "
            f"choose one of {', '.join(model.qualities)}",
            "quality",
        )
    aspect_ratio = payload.get("aspectRatio") or model.default_aspect_ratio
    if mode == "t2i" and aspect_ratio == "auto":
        aspect_ratio = "1:1"  # there is no input image to take the ratio from
    if aspect_ratio not in model.aspect_ratios:
        raise ValidationError(
            f"aspectRatio {aspect_ratio!r} is not offered by {model_id}; "
            f"choose one of {', '.join(model.aspect_ratios)}",
            "aspectRatio",
        )
    return GenerationSpec(
        model=model,
        mode=mode,
        prompt=prompt.strip(),
        negative_prompt=(negative_prompt or "").strip() or None,
        quality=quality,
        aspect_ratio=aspect_ratio,
    )


def _refuse_control_characters(text, field):
    if CONTROL_IN_TEXT.search(text):
        raise ValidationError(f"{field} contains a control character (such as NUL)", field)


def parse_concurrency(value, limits):
    """A whole number of at least 1, capped at the limit; None is the default."""
    if value is None:
        return min(limits.default_concurrency, limits.max_concurrency)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError("concurrency must be a whole number of at least 1", "concurrency")
    return min(value, limits.max_concurrency)
