"""The upload page: pick images, settings and see the live cost line, then create the batch."""

from flask import current_app, render_template, request, url_for
from flask_login import current_user, login_required

from tasks import get_queue

from .. import billing
from ..catalog import load_catalog
from ..generation.canary import MAX_CANARY
from ..generation.creation import TooManyInFlight, create_batch
from ..generation.validation import MAX_PROMPT_CHARS, Limits
from ..providers import get_provider
from ..storage import get_storage
from . import bp
from .htmx import page_or_fragment, see_other
from .upload_form import FormErrors, form_settings, parse_batch_upload, quote_form


@bp.get("/upload/options")
@login_required
def upload_options():
    """The quality and aspect-ratio choices (and prices) of the model picked in the form."""
    catalog = load_catalog()
    return render_template(
        "upload/_options.html",
        model=catalog.model_for(request.args.get("model"), "i2i"),
        settings=form_settings(request.args, catalog),
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
        batch = create_batch(
            current_user.id,
            spec,
            get_storage(),
            get_provider().name,
            get_queue(current_app),
            limits_in_flight=current_app.config["USER_MAX_PENDING_IMAGES"],
        )
    except FormErrors as error:
        return upload_form(request.form, error.errors, error.image_count)
    except TooManyInFlight as error:
        return upload_form(request.form, {"images": error.message}, len(uploads))
    except billing.InsufficientCredits as error:
        message = (
            f"Insufficient credits: this batch costs {error.required}⭐ "
            f"and you have {error.available}⭐."
        )
        return upload_form(request.form, {"credits": message}, len(uploads))
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
        model=catalog.model_for(fields.get("model"), "i2i"),
        settings=form_settings(fields, catalog),
        form=fields,
        errors=errors or {},
        limits=limits,
        max_prompt_chars=MAX_PROMPT_CHARS,
        parallel_choices=[n for n in (2, 4, 8) if n <= limits.max_concurrency],
        max_canary=MAX_CANARY,
        quote=_quote(fields),
    )


def _quote(fields):
    config = current_app.config
    return quote_form(
        fields,
        load_catalog(),
        Limits.from_config(config),
        current_user.credits,
        config["MAX_CONTENT_LENGTH"],
    )
