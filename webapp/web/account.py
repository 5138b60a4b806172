"""The account page: the balance and the ledger behind it, each movement linked to its batch."""

from flask import render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from ..extensions import db
from ..models import LedgerEntry
from . import bp
from .htmx import page_of

LEDGER_PAGE_SIZE = 50


@bp.get("/account")
@login_required
def account():
    """The balance and every credit movement behind it, newest first, a page at a time."""
    page = page_of(
        db.session,
        select(LedgerEntry)
        .where(LedgerEntry.user_id == current_user.id)
        .order_by(LedgerEntry.id.desc()),
        LEDGER_PAGE_SIZE,
    )
    return render_template("account/index.html", page=page, entries=[e for (e,) in page.rows])
