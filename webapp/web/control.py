"""The batch page's queue-control forms: pause and resume; approve or reject the rest of a
canary batch (CSRF forms, as cancel's).

With htmx the grid comes back in place, with the notice; without, a flash and the batch page.
"""

from flask import current_app, flash, url_for
from flask_login import login_required

from tasks import get_queue

from ..errors import is_htmx
from ..generation import canary
from ..generation.pausing import NotPausable, pause_batch, resume_batch
from . import bp
from .batches import _own_batch_or_404, grid_context
from .htmx import page_or_fragment, see_other


@bp.post("/batches/<batch_id>/pause")
@login_required
def pause(batch_id):
    """Pause the batch: no new image starts; the running ones finish."""
    _own_batch_or_404(batch_id)
    try:
        notice = pause_batch(batch_id).message
    except NotPausable as refused:
        notice = refused.message
    return _grid_with(batch_id, notice)


@bp.post("/batches/<batch_id>/resume")
@login_required
def resume(batch_id):
    """Resume a paused batch: its lanes are rung again."""
    _own_batch_or_404(batch_id)
    try:
        notice = resume_batch(batch_id, get_queue(current_app)).message
    except NotPausable as refused:
        notice = refused.message
    return _grid_with(batch_id, notice)


@bp.post("/batches/<batch_id>/approve")
@login_required
def approve(batch_id):
    """Approve a canary batch: the rest of its images run."""
    _own_batch_or_404(batch_id)
    try:
        notice = canary.approve(batch_id, get_queue(current_app)).message
    except canary.NotAwaitingApproval as refused:
        notice = refused.message
    return _grid_with(batch_id, notice)


@bp.post("/batches/<batch_id>/reject")
@login_required
def reject(batch_id):
    """Stop a canary batch here: the rest is cancelled and refunded."""
    _own_batch_or_404(batch_id)
    try:
        outcome = canary.reject(batch_id)
    except canary.NotAwaitingApproval as refused:
        notice = refused.message
    else:
        notice = "The batch was already stopped." if outcome.repeated else outcome.message
    return _grid_with(batch_id, notice)


@bp.app_template_global()
def approval_deadline(batch):
    """When a batch awaiting approval is rejected for want of an answer (None otherwise)."""
    return canary.deadline(batch, current_app.config["CANARY_APPROVAL_HOURS"])


def _grid_with(batch_id, notice):
    """The grid with the notice (htmx), or the batch page after a flash."""
    if is_htmx():
        batch = _own_batch_or_404(batch_id)
        return page_or_fragment(
            "batches/show.html", "batches/_grid.html", notice=notice, **grid_context(batch)
        )
    flash(notice)
    return see_other(url_for("web.show", batch_id=batch_id))
