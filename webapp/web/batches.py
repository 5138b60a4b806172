"""A batch's page and live grid, its cancel and retry, its downloads, and the history list."""

import mimetypes

from flask import (
    Response,
    abort,
    current_app,
    flash,
    make_response,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user, login_required
from sqlalchemy import select

from tasks import get_queue

from .. import billing
from ..catalog import load_catalog
from ..conditional import conditional_get
from ..errors import is_htmx
from ..extensions import db
from ..generation.cancellation import NothingToCancel, cancel_batch, preview_cancel
from ..generation.creation import TooManyInFlight
from ..generation.deliveries import delivery_log
from ..generation.eta import outlook as eta_outlook
from ..generation.etags import grid_tag
from ..generation.history import MAX_SEARCH, batches_of, history_filter
from ..generation.ownership import owned_batch
from ..generation.paging import BATCH_STATUSES
from ..generation.progress import Progress, progress_of
from ..generation.retention import expires_at
from ..generation.retry import AlreadyRetried, NothingToRetry, retry_failed, retry_of
from ..generation.validation import MAX_PROMPT_CHARS, Limits, ValidationError
from ..models import Generation, GenerationStatus, looks_like_id, utcnow
from ..providers import get_provider
from ..storage import get_storage
from ..words import count_of
from . import bp
from .archive import archive_entries, archive_name, stream_zip
from .htmx import page_of, page_or_fragment, see_other, wants_fragment

HISTORY_PAGE_SIZE = 20


@bp.get("/batches")
@login_required
def history():
    """The user's batches, newest first, with their image counts, a page at a time; filtered
    by status and by a piece of the prompt (a plain GET form; htmx swaps only the results)."""
    chosen = history_filter(request.args.getlist("status"), request.args.get("q"))
    query = batches_of(current_user.id, chosen.statuses, chosen.search)
    page = page_of(db.session, query, HISTORY_PAGE_SIZE)
    batches = [batch for (batch,) in page.rows]
    progress = progress_of([batch.id for batch in batches])
    template = "batches/_history.html" if wants_fragment() else "batches/index.html"
    response = make_response(
        render_template(
            template,
            page=page,
            rows=[(batch, progress[batch.id]) for batch in batches],
            chosen=chosen,
            statuses=BATCH_STATUSES,
            max_search=MAX_SEARCH,
            pager_args=chosen.query_args(),
        )
    )
    response.headers["Vary"] = "HX-Request"
    return response


def _polled_grid_tag(batch_id):
    """The grid fragment's ETag (generation/etags.py): its poll is answered 304 when nothing
    it shows changed (base.html's htmx config swaps nothing then). The page has none as a
    header: its grid carries the tag (data-etag) instead."""
    return grid_tag(current_user.id, batch_id) if wants_fragment() else None


@bp.get("/batches/<batch_id>")
@login_required
@conditional_get(_polled_grid_tag, vary="HX-Request")
def show(batch_id):
    """The batch page; htmx polls the same URL for the grid until the batch is finished."""
    # The page's grid holds the tag its first poll sends (static/grid.js), told before the read:
    # a change in between moves the tag, so that poll swaps rather than keeps what it missed.
    first_tag = None if wants_fragment() else grid_tag(current_user.id, batch_id)
    batch = _own_batch_or_404(batch_id)
    # The delivery log is part of the page, not of the grid that polls.
    log = [] if wants_fragment() else delivery_log(current_user.id, batch_id=batch.id)
    return page_or_fragment(
        "batches/show.html",
        "batches/_grid.html",
        deliveries=log,
        expires_at=expires_at(batch),
        first_tag=first_tag,
        **grid_context(batch),
    )


@bp.get("/batches/<batch_id>/cancel")
@login_required
def confirm_cancel(batch_id):
    """Say what cancelling would do (a dialog for htmx, a page otherwise) before doing it."""
    batch = _own_batch_or_404(batch_id)
    preview = None if batch.is_finished else preview_cancel(batch_id)
    return page_or_fragment(
        "batches/cancel.html", "batches/_cancel.html", batch=batch, preview=preview
    )


@bp.post("/batches/<batch_id>/cancel")
@login_required
def cancel(batch_id):
    """Cancel through the API's service; htmx gets the grid back, with the new balance."""
    _own_batch_or_404(batch_id)
    try:
        notice = cancel_batch(batch_id).message
    except NothingToCancel as finished:
        notice = f"The batch is already {finished.status}: there was nothing to cancel."
    batch = _own_batch_or_404(batch_id)
    if is_htmx():
        return page_or_fragment(
            "batches/show.html", "batches/_grid.html", notice=notice, **grid_context(batch)
        )
    flash(notice)
    return see_other(url_for("web.show", batch_id=batch_id))


@bp.post("/batches/<batch_id>/retry")
@login_required
def retry(batch_id):
    """A new batch of this one's failed images, charged for them only, linked back here."""
    batch = _own_batch_or_404(batch_id)
    try:
        created = _retry(batch)
    except AlreadyRetried as done:
        flash("These failed images were retried already: here is that batch.")
        return see_other(url_for("web.show", batch_id=done.retry_id))
    except (NothingToRetry, ValidationError, billing.InsufficientCredits, TooManyInFlight) as error:
        flash(_retry_refusal(error), "error")
        return see_other(url_for("web.show", batch_id=batch_id))
    images = count_of(len(created.generations), "failed image")
    flash(f"Retrying {images} for {created.total_cost}⭐.")
    return see_other(url_for("web.show", batch_id=created.id))


@bp.get("/batches/<batch_id>/reprompt")
@login_required
def reprompt(batch_id):
    """Retry with another prompt: the failed images, with the batch's prompt to edit."""
    return _reprompt_page(_own_batch_or_404(batch_id))


@bp.post("/batches/<batch_id>/reprompt")
@login_required
def retry_with_prompt(batch_id):
    """The failed images again (copies of their inputs), with the form's prompt; the new
    batch, or the form again saying what is wrong."""
    batch = _own_batch_or_404(batch_id)
    form = request.form
    prompts = {
        "prompt": form.get("prompt", "").replace("\r\n", "\n"),
        "negativePrompt": form.get("negativePrompt", "").replace("\r\n", "\n") or None,
    }
    try:
        created = _retry(batch, prompts)
    except AlreadyRetried as done:
        flash("These failed images were retried already: here is that batch.")
        return see_other(url_for("web.show", batch_id=done.retry_id))
    except ValidationError as error:
        return _reprompt_page(batch, prompts, error.message, error.field)
    except (NothingToRetry, billing.InsufficientCredits, TooManyInFlight) as error:
        return _reprompt_page(batch, prompts, _retry_refusal(error))
    flash(f"Retrying {count_of(len(created.generations), 'failed image')} with the new prompt "
          f"for {created.total_cost}⭐.")
    return see_other(url_for("web.show", batch_id=created.id))


def _retry(batch, prompts=None):
    """The retry service on this app's storage, provider, catalog, limits and queue."""
    return retry_failed(
        batch,
        get_storage(),
        get_provider().name,
        load_catalog(),
        Limits.from_config(current_app.config),
        get_queue(current_app),
        current_app.config["USER_MAX_PENDING_IMAGES"],
        prompts=prompts,
    )


def _reprompt_page(batch, prompts=None, error=None, field=None):
    generations = list(batch.generations)
    prompts = prompts or {"prompt": batch.prompt, "negativePrompt": batch.negative_prompt}
    html = render_template(
        "batches/reprompt.html",
        batch=batch,
        failed=[g for g in generations if g.status == GenerationStatus.FAILED],
        prompt=prompts["prompt"],
        negative_prompt=prompts["negativePrompt"] or "",
        cost=_retry_cost(batch, Progress.of(generations)),
        error=error,
        field=field,
        max_prompt_chars=MAX_PROMPT_CHARS,
    )
    return html, 422 if error else 200


@bp.get("/batches/<batch_id>/download")
@login_required
def download(batch_id):
    """Every finished image of the batch in one zip, streamed as it is made."""
    batch = _own_batch_or_404(batch_id)
    kept = [g for g in batch.generations if g.result_deleted_at is None]
    entries = archive_entries(kept)
    if not entries:
        if len(kept) < len(batch.generations):
            abort(410, _deleted_words())
        abort(404, "This batch has no finished image to download yet.")
    return Response(
        stream_zip(entries, get_storage()),
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{batch.id}.zip"'},
    )


@bp.get("/batches/<batch_id>/images/<generation_id>")
@login_required
def download_result(batch_id, generation_id):
    """One finished image, as a file named like its entry in the zip."""
    if not looks_like_id(generation_id):
        abort(404)
    generation = db.session.scalar(
        select(Generation).where(
            Generation.id == generation_id,
            Generation.batch_id == batch_id,
            Generation.user_id == current_user.id,
            Generation.status == GenerationStatus.SUCCESS,
        )
    )
    if generation is None or not generation.result_key:
        abort(404)
    if generation.result_deleted_at:
        abort(410, _deleted_words())
    try:
        stored = get_storage().open(generation.result_key)
    except FileNotFoundError:
        abort(404)
    return send_file(
        stored,
        mimetype=mimetypes.guess_type(generation.result_key)[0] or "application/octet-stream",
        as_attachment=True,
        download_name=archive_name(generation),
    )


def grid_context(batch):
    """What the grid and its progress line show: one query for the images, none per card.

    `settled`: nothing will change any more. A cancelled batch is finished at once, but the
    images already at the engine are still running: the grid keeps polling until they end.
    """
    generations = list(batch.generations)
    progress = Progress.of(generations)
    settled = batch.is_finished and progress.is_complete
    outlook = eta_outlook(batch, generations, utcnow())
    failed = [g for g in generations if g.status == GenerationStatus.FAILED]
    refused = sum(g.error_code in PROMPT_FAILURES for g in failed)
    return {
        "batch": batch,
        "generations": generations,
        "progress": progress,
        "settled": settled,
        # The API's eta (generation/eta.py): the one estimate, and each queued image's place.
        "eta": outlook.eta,
        "seconds_left": outlook.eta.seconds if outlook.eta else None,
        "places": outlook.places,
        "retry_id": retry_of(batch.id) if settled and progress.failed else None,
        "retry_cost": _retry_cost(batch, progress) if settled else None,
        # Refused for their content: the same prompt would be refused again, so these are
        # offered their failed images again with the prompt to edit (reprompt).
        "refused": refused,
        "transient": progress.failed - refused,
        "reprompt_url": url_for("web.reprompt", batch_id=batch.id) if refused else None,
        # "New batch with these settings": the same upload page, the same settings.
        "settings_url": _reprompt_url(batch),
    }


# Failures a plain retry would meet again: the prompt or image has to change.
PROMPT_FAILURES = frozenset({"content_policy"})


def _reprompt_url(batch):
    """The upload page, filled in with this batch's model, quality, ratio and prompts."""
    prompts = {"prompt": batch.prompt, "negativePrompt": batch.negative_prompt or None}
    return url_for(
        "web.index",
        model=batch.model,
        quality=batch.quality,
        aspectRatio=batch.aspect_ratio,
        **prompts,
    )


def _retry_cost(batch, progress):
    """What retrying the failed images costs at today's price (None if no longer sold)."""
    model = load_catalog().get(batch.model)
    if not progress.failed or model is None or batch.quality not in model.qualities:
        return None
    return model.price(batch.quality) * progress.failed


def _retry_refusal(error):
    if isinstance(error, billing.InsufficientCredits):
        return (
            f"Insufficient credits: retrying costs {error.required}⭐ "
            f"and you have {error.available}⭐."
        )
    if isinstance(error, ValidationError):
        return f"This batch cannot be retried as it was: {error.message}."
    if isinstance(error, TooManyInFlight):
        return error.message
    return str(error)


def _deleted_words():
    days = current_app.config["RESULT_RETENTION_DAYS"]
    return f"These images were deleted: results are kept {days:g} days after their batch finishes."


def _own_batch_or_404(batch_id):
    """The signed-in user's batch; anyone else's is as unknown as a batch that never existed."""
    batch = owned_batch(batch_id, current_user.id)
    if batch is None:
        abort(404)
    return batch
