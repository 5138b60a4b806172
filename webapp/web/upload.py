"""The upload page: pick images, settings and see the live cost line, then create the batch."""

from dataclasses import dataclass, replace

from flask import current_app, render_template, request, url_for
from flask_login import current_user, login_required

from tasks import get_queue

from .. import billing
from ..catalog import load_catalog
from ..generation.creation import create_batch
from ..generation.validation import (
    FormErrors,
    Limits,
    ValidationError,
    check_image_count,
    parse_batch_upload,
    parse_upload_settings,
)
from ..providers import get_provider
from ..storage import get_storage
from . import bp
from .htmx import page_or_fragment, see_other


@dataclass(frozen=True)
class Quote:
    """The cost line: what the chosen images cost, the balance, and what blocks submitting."""

    count: int | None  # None until the browser says how many images are chosen
    price: int  # ⭐ per image at the chosen model and quality
    balance: int
    problem: str | None

    @property
    def total(self):
        return None if self.count is None else self.count * self.price


def quote(fields, catalog, limits, balance, request_limit):
    """Price the form as it stands. Images are checked first (the first thing a person does),
    then the settings, then the balance."""
    count = _whole_number(fields.get("imageCount"))
    size = _whole_number(fields.get("imageBytes"))
    settings = resolved_settings(fields, catalog)
    price = chosen_model(fields, catalog).price(settings["quality"])
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
    result = Quote(count, price, balance, problems[0] if problems else None)
    if result.problem is None and result.total is not None and result.total > balance:
        return replace(result, problem=f"Not enough credits: {result.total - balance}⭐ short")
    return result


def chosen_model(fields, catalog):
    """The model the form names if it does image-to-image, else the catalog's first that does."""
    model = catalog.get(fields.get("model") or "")
    if model is not None and "i2i" in model.modes:
        return model
    return next(model for model in catalog if "i2i" in model.modes)


def resolved_settings(fields, catalog):
    """The form's settings as the options fragment shows them: a quality or ratio the chosen
    model does not offer (it was picked for another model) becomes the model's default."""
    model = chosen_model(fields, catalog)
    quality = fields.get("quality")
    ratio = fields.get("aspectRatio")
    return {
        "prompt": fields.get("prompt"),
        "negativePrompt": fields.get("negativePrompt"),
        "model": model.id,
        "quality": quality if quality in model.qualities else model.default_quality,
        "aspectRatio": ratio if ratio in model.aspect_ratios else model.default_aspect_ratio,
    }


@bp.get("/upload/options")
@login_required
def upload_options():
    """The quality and aspect-ratio choices (and prices) of the model picked in the form."""
    catalog = load_catalog()
    return render_template(
        "upload/_options.html",
        model=chosen_model(request.args, catalog),
        settings=resolved_settings(request.args, catalog),
        errors={},
    )


@bp.get("/upload/cost")
@login_required
def upload_cost():
    """The cost line for the form as it stands (htmx asks whenever an input changes)."""
    return render_template("upload/_cost.html", quote=_quote(request.args))


@bp.post("/batches")
@login_required
def create():
    """Create a batch from the upload form (the API's service: same checks, one charge)."""
    uploads = [
        (upload.filename, upload.read())
        for upload in request.files.getlist("images")
        if upload.filename
    ]
    try:
        spec = parse_batch_upload(
            request.form, uploads, load_catalog(), Limits.from_config(current_app.config)
        )
        batch = create_batch(current_user.id, spec, get_storage(), get_provider().name)
    except FormErrors as error:
        return upload_form(request.form, error.errors, len(uploads))
    except billing.InsufficientCredits as error:
        message = (
            f"Insufficient credits: this batch costs {error.required}⭐ "
            f"and you have {error.available}⭐."
        )
        return upload_form(request.form, {"credits": message}, len(uploads))
    get_queue(current_app).start_batch(batch.id, batch.concurrency, len(spec.images))
    return see_other(url_for("web.show", batch_id=batch.id))


def upload_form(fields=None, errors=None, image_count=None):
    """The upload page (or, to htmx, the form alone), showing `errors` next to their fields.

    A refused form answers 422, which htmx is configured to swap in (base.html): the file
    picker is preserved across the swap, so the chosen images stay chosen.
    """
    catalog = load_catalog()
    limits = Limits.from_config(current_app.config)
    fields = dict(fields or {})
    if image_count is not None:
        fields["imageCount"] = str(image_count)
    return page_or_fragment(
        "upload/new.html",
        "upload/_form.html",
        status=422 if errors else 200,
        models=[model for model in catalog if "i2i" in model.modes],
        model=chosen_model(fields, catalog),
        settings=resolved_settings(fields, catalog),
        form=fields,
        errors=errors or {},
        limits=limits,
        parallel_choices=[n for n in (2, 4, 8) if n <= limits.max_concurrency],
        quote=_quote(fields),
    )


def _quote(fields):
    config = current_app.config
    return quote(
        fields,
        load_catalog(),
        Limits.from_config(config),
        current_user.credits,
        config["MAX_CONTENT_LENGTH"],
    )


def _whole_number(value):
    return int(value) if isinstance(value, str) and value.strip().isdigit() else None
