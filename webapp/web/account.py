"""The account page: the balance and the ledger behind it, each movement linked to its batch,
and the API tokens, which a person can create (shown once) and revoke."""

from flask import abort, flash, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from ..auth import create_token, revoke_token, tokens_of
from ..extensions import db
from ..models import LedgerEntry
from . import bp
from .htmx import page_of, see_other

LEDGER_PAGE_SIZE = 50


@bp.get("/account")
@login_required
def account():
    """The balance and every credit movement behind it, newest first, a page at a time."""
    return _account_page()


def _account_page(new_token=None):
    page = page_of(
        db.session,
        select(LedgerEntry)
        .where(LedgerEntry.user_id == current_user.id)
        .order_by(LedgerEntry.id.desc()),
        LEDGER_PAGE_SIZE,
    )
    return render_template(
        "account/index.html",
        page=page,
        lines=ledger_lines([e for (e,) in page.rows]),
        tokens=tokens_of(current_user.id),
        new_token=new_token,
    )


class LedgerLine:
    """Ledger rows of one batch and one kind (and note) shown as one line: their sum, newest
    first. A row of no batch (a grant, a single image) is a line of its own."""

    def __init__(self, entry):
        self.entries = [entry]
        self.kind, self.note = entry.kind, entry.note
        self.batch_id, self.generation_id = entry.batch_id, entry.generation_id
        self.created_at = entry.created_at

    @property
    def count(self):
        return len(self.entries)

    @property
    def amount(self):
        return sum(entry.amount for entry in self.entries)


def ledger_lines(entries):
    """The page's rows (newest first) grouped per batch, each line where its newest row is.

    Grouping stays within the page: a batch whose rows straddle two pages has a line on each.
    """
    lines, by_batch = [], {}
    for entry in entries:
        key = (entry.batch_id, entry.kind, entry.note)
        if entry.batch_id and key in by_batch:
            by_batch[key].entries.append(entry)
            continue
        line = LedgerLine(entry)
        lines.append(line)
        if entry.batch_id:
            by_batch[key] = line
    return lines


@bp.post("/account/tokens")
@login_required
def create_api_token():
    """A new API token, shown on the page this once (it is not kept, and not put in a cookie)."""
    label = (request.form.get("label") or "").strip()[:64] or "web"
    token = create_token(current_user.id, label)
    db.session.commit()
    return _account_page(new_token=token)


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_api_token(token_id):
    """Revoke one of the user's own tokens; anyone else's is as unknown as none."""
    if not revoke_token(token_id, current_user.id):
        abort(404)
    flash("The token was revoked: it no longer works.")
    return see_other(url_for("web.account"))
