"""The HTML side: the upload page, a batch's live grid, history and the account page.

Sign-in and sign-out are `auth.views`; the JSON API is `api`. Routes here stay thin: they parse
the form, call the same services the API calls, and render a page or its htmx fragment.
"""

from flask import Blueprint, render_template, request
from flask_login import current_user

from ..catalog import load_catalog

bp = Blueprint("web", __name__)


@bp.app_template_filter("duration")
def duration(seconds):
    """`40 s`, `3 min`, `1 h 5 min`: a rough time for an estimate."""
    seconds = max(round(seconds), 1)
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@bp.get("/")
def index():
    """The upload page, or for someone not signed in what the service is and how to sign in."""
    if not current_user.is_authenticated:
        return render_template("web/index.html", models=list(load_catalog()))
    return upload.upload_form(prefilled(request.args))


# The settings a link may fill the upload form with ("Retry with another prompt").
PREFILLED = ("model", "quality", "aspectRatio", "prompt", "negativePrompt")


def prefilled(args):
    """The upload form's fields from the query string; the form checks them when it is sent."""
    return {name: args[name] for name in PREFILLED if args.get(name)}


@bp.app_template_filter("model_name")
def model_name(model_id):
    """A model's name as the catalog shows it ("FLUX.2 Pro"), or its id if no longer sold."""
    model = load_catalog().get(model_id)
    return model.name if model else model_id


from . import account, batches, control, upload, webhooks  # noqa: E402,F401  (their routes join bp)
