"""The upload form as the server reads it: every wrong field at once, the uploaded files, and
the cost line while the form is being filled in. Built on the API's checks
(webapp.generation.validation), so a form and a JSON body are held to the same rules."""

from ..billing.quotes import quote
from ..generation.canary import MAX_CANARY, parse_canary
from ..generation.validation import (
    CONTROL_IN_ID,
    MAX_CLIENT_ID_CHARS,
    BatchSpec,
    ValidationError,
    check_image,
    parse_concurrency,
    parse_upload_settings,
)
from .numbers import whole_number


class FormErrors(ValidationError):
    """Several fields of a form are wrong: {field: message}, in the form's order. The images'
    entry is a tuple when several files are bad: one message per file. `image_count` is how
    many of the uploaded files are good images, for the cost line of the re-rendered form."""

    def __init__(self, errors, image_count=None):
        field, message = next(iter(errors.items()))
        super().__init__(message if isinstance(message, str) else message[0], field)
        self.errors = errors
        self.image_count = image_count


class FileErrors(ValidationError):
    """Uploaded files that are not images a batch can take: one message for each of them."""

    def __init__(self, messages, good):
        super().__init__(messages[0], "images")
        self.messages = tuple(messages)
        self.good = good


def parse_batch_upload(fields, uploads, catalog, limits):
    """Check the web upload form: `fields` like the JSON body, `uploads` [(filename, bytes)].

    Raises FormErrors naming every wrong field, so the form can show each problem at once.
    """
    errors = {}
    fields = _as_typed(fields)
    generation = _collect(errors, parse_upload_settings, fields, catalog)
    concurrency = _collect(errors, _parse_form_concurrency, fields.get("concurrency"), limits)
    images, image_count = None, len(uploads)
    try:
        images = _check_uploads(uploads, limits)
        image_count = len(images)
    except FileErrors as error:
        errors["images"], image_count = error.messages, error.good
    except ValidationError as error:
        errors["images"] = error.message
    canary = _collect(errors, _parse_form_canary, fields.get("canary"), images)
    if errors:
        raise FormErrors(errors, image_count)
    return BatchSpec(generation=generation, concurrency=concurrency, images=images, canary=canary)


def _as_typed(fields):
    """The fields with the prompt's line breaks as typed: a form posts each as CRLF, but the
    browser counts it as one character (and so does the textarea's maxlength)."""
    typed = {name: fields.get(name) for name in fields}
    if isinstance(typed.get("prompt"), str):
        typed["prompt"] = typed["prompt"].replace("\r\n", "\n")
    return typed


def check_image_count(count, limits):
    """A batch has 1 to `max_images` images."""
    if count < 1:
        raise ValidationError("Choose at least one image", "images")
    if count > limits.max_images:
        raise ValidationError(
            f"{count} images chosen; at most {limits.max_images} are allowed", "images"
        )


def form_settings(fields, catalog):
    """The form's settings as the options fragment shows them: a quality or ratio the chosen
    model does not offer (it was picked for another model) becomes the model's default."""
    model = catalog.model_for(fields.get("model"), "i2i")
    return {
        "prompt": fields.get("prompt"),
        "negativePrompt": fields.get("negativePrompt"),
        "model": model.id,
        "quality": model.offered_quality(fields.get("quality")),
        "aspectRatio": model.offered_aspect_ratio(fields.get("aspectRatio")),
    }


def quote_form(fields, catalog, limits, balance, request_limit):
    """Price the form as it stands. Images are checked first (the first thing a person does),
    then the settings, then the balance."""
    count = whole_number(fields.get("imageCount"))
    size = whole_number(fields.get("imageBytes"))
    settings = form_settings(fields, catalog)
    price = catalog.get(settings["model"]).price(settings["quality"])
    problems = []
    if count is not None:
        try:
            check_image_count(count, limits)
        except ValidationError as error:
            problems.append(error.message)
    if size is not None and size > request_limit:
        problems.append(
            f"These images add up to {size / 2**20:.0f} MB; "
            f"one upload takes at most {request_limit // 2**20} MB"
        )
    try:
        parse_upload_settings(settings, catalog)
    except ValidationError as error:
        problems.append(error.message)
    return quote(count, price, balance, problems[0] if problems else None)


def _check_uploads(uploads, limits):
    """Every uploaded file checked, so a refusal names each bad one (FileErrors), not the first."""
    check_image_count(len(uploads), limits)
    images = []
    bad = []
    seen = set()
    for filename, raw in uploads:
        # A file's name is only its label here: control characters become "_".
        name = CONTROL_IN_ID.sub("_", filename or "image")[:MAX_CLIENT_ID_CHARS]
        client_id, copy = name, 1
        while client_id in seen:  # two files may share a name; client ids may not
            copy += 1
            client_id = f"{name} ({copy})"
        seen.add(client_id)
        try:
            images.append(check_image(raw, name, limits, client_id))
        except ValidationError as error:
            bad.append(error.message)
    if bad:
        raise FileErrors(bad, good=len(images))
    return tuple(images)


def _parse_form_concurrency(value, limits):
    """A form sends text: "4" is 4, an empty choice is the default, and anything else is the
    API's "not a whole number"."""
    if isinstance(value, str):
        number = whole_number(value)
        value = number if number is not None else value or None
    return parse_concurrency(value, limits)


def _parse_form_canary(value, images):
    """"Try N first": empty runs every image; else the API's check (1 to MAX_CANARY, fewer than
    the images), told in the form's words. Not checked against images that were refused."""
    if value in (None, ""):
        return None
    number = whole_number(value) if isinstance(value, str) else value
    if number is None or not 1 <= number <= MAX_CANARY:
        raise ValidationError(
            f"Try first: choose from 1 to {MAX_CANARY} images, or run every image", "canary"
        )
    if images is None:
        return number
    try:
        return parse_canary(number, len(images))
    except ValidationError:
        raise ValidationError(
            f"Try first needs more images than it tries: {len(images)} chosen, so try at most "
            f"{len(images) - 1} first, or run every image",
            "canary",
        ) from None


def _collect(errors, parse, *args):
    """Run one check; on failure note its message under its field and answer None."""
    try:
        return parse(*args)
    except ValidationError as error:
        errors.setdefault(error.field, error.message)
        return None

