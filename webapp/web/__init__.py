"""The HTML side: sign in, upload a batch, watch its live grid, look back at past batches."""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import func, select

from tasks import get_queue

from .. import billing
from ..auth import user_for_token
from ..catalog import load_catalog
from ..extensions import db
from ..generation.creation import create_batch
from ..generation.progress import Progress
from ..generation.validation import Limits, ValidationError, parse_batch_upload
from ..models import Batch, Generation, LedgerEntry
from ..providers import get_provider
from ..storage import get_storage
from .archive import results_archive

bp = Blueprint("web", __name__)

HISTORY_PAGE_SIZE = 50
LEDGER_PAGE_SIZE = 100


def page_or_fragment(page, fragment, **context):
    """Render the whole page, or only the fragment when htmx asks for it (not when boosted)."""
    headers = request.headers
    wants_fragment = (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )
    response = make_response(render_template(fragment if wants_fragment else page, **context))
    response.headers["Vary"] = "HX-Request"
    return response


def _upload_page(status=200, error=None, form=None):
    catalog = load_catalog()
    form = form or {}
    model = catalog.get(form.get("model")) or next(m for m in catalog if "i2i" in m.modes)
    html = render_template(
        "upload/new.html",
        models=list(catalog),
        model=model,
        form=form,
        error=error,
        limits=Limits.from_config(current_app.config),
    )
    return html, status


@bp.get("/")
def index():
    if not current_user.is_authenticated:
        return render_template("web/index.html", models=list(load_catalog()))
    return _upload_page()


@bp.get("/upload/options")
@login_required
def upload_options():
    """The quality and aspect-ratio choices (and price) of the model picked in the form."""
    catalog = load_catalog()
    model = catalog.get(request.args.get("model", "")) or next(iter(catalog))
    return render_template("upload/_options.html", model=model, form=request.args)


@bp.post("/batches")
@login_required
def create():
    """Create a batch from the upload form and go to its live page."""
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
    except ValidationError as error:
        return _upload_page(400, error.message, request.form)
    except billing.InsufficientCredits as error:
        message = (
            f"Insufficient credits: this batch costs {error.required}⭐ "
            f"and you have {error.available}⭐."
        )
        return _upload_page(402, message, request.form)
    get_queue(current_app).start_batch(batch.id, batch.concurrency, len(spec.images))
    return redirect(url_for("web.show", batch_id=batch.id), code=303)


@bp.get("/batches")
@login_required
def history():
    images = (
        select(func.count(Generation.id))
        .where(Generation.batch_id == Batch.id)
        .correlate(Batch)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(Batch, images)
        .where(Batch.user_id == current_user.id)
        .order_by(Batch.created_at.desc())
        .limit(HISTORY_PAGE_SIZE)
    ).all()
    return render_template("batches/index.html", rows=rows)


@bp.get("/batches/<batch_id>")
@login_required
def show(batch_id):
    """The batch page; htmx polls the same URL for the grid until the batch is finished."""
    batch = _own_batch_or_404(batch_id)
    generations = list(batch.generations)
    return page_or_fragment(
        "batches/show.html",
        "batches/_grid.html",
        batch=batch,
        generations=generations,
        progress=Progress.of(generations),
    )


@bp.get("/batches/<batch_id>/download")
@login_required
def download(batch_id):
    """All finished images of the batch as one zip file."""
    batch = _own_batch_or_404(batch_id)
    archive = results_archive(batch.generations, get_storage())
    return send_file(
        archive, mimetype="application/zip", as_attachment=True, download_name=f"{batch.id}.zip"
    )


@bp.get("/account")
@login_required
def account():
    """The balance and every credit movement behind it, newest first."""
    entries = db.session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.user_id == current_user.id)
        .order_by(LedgerEntry.id.desc())
        .limit(LEDGER_PAGE_SIZE)
    ).all()
    return render_template("account/index.html", entries=entries)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with an API token (from `flask --app app users create`)."""
    if request.method == "POST":
        user = user_for_token(request.form.get("token", "").strip())
        if user is None:
            flash("That token is not valid.", "error")
            return render_template("account/login.html"), 401
        login_user(user)
        return redirect(_safe_next(request.args.get("next")), code=303)
    return render_template("account/login.html")


@bp.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("web.index"), code=303)


def _safe_next(target):
    """Only same-site paths: never redirect a signed-in user to another host."""
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("web.index")


def _own_batch_or_404(batch_id):
    batch = db.session.scalar(
        select(Batch).where(Batch.id == batch_id, Batch.user_id == current_user.id)
    )
    if batch is None:
        abort(404)
    return batch
