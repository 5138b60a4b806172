"""A user's history: their batches newest first, and their ledger newest first with the balance
right after each entry. The API reads them a page at a time by keyset (paging.py); the history
page shares `batches_of`, its order and its filter.
"""

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import and_, func, or_, select

from ..extensions import db
from ..models import Batch, LedgerEntry
from .progress import progress_of


@dataclass(frozen=True)
class BatchPage:
    batches: list  # Batch rows, newest first
    progress: dict  # batch id → Progress, from one grouped query for the page
    has_more: bool


class LedgerLine(NamedTuple):
    entry: object  # a row of LedgerEntry's columns
    balance_after: int


@dataclass(frozen=True)
class LedgerPage:
    lines: list  # LedgerLine, newest first
    has_more: bool


def batches_of(user_id, statuses=None):
    """The user's batches (of these statuses, when given), newest first: created_at, then id,
    descending, so rows created in the same instant still have one order."""
    query = select(Batch).where(Batch.user_id == user_id)
    if statuses:
        query = query.where(Batch.status.in_(statuses))
    return query.order_by(Batch.created_at.desc(), Batch.id.desc())


def batch_page(user_id, limit, after=None, statuses=None):
    """Up to `limit` of the user's batches that come after the position `after`
    ((created_at, id) of the last batch of the page before), with their progress."""
    query = batches_of(user_id, statuses)
    if after is not None:
        created_at, batch_id = after
        query = query.where(
            or_(
                Batch.created_at < created_at,
                and_(Batch.created_at == created_at, Batch.id < batch_id),
            )
        )
    rows = db.session.scalars(query.limit(limit + 1)).all()
    batches = rows[:limit]
    return BatchPage(batches, progress_of([batch.id for batch in batches]), len(rows) > limit)


def ledger_page(user_id, limit, before=None):
    """Up to `limit` of the user's ledger entries older than the entry id `before`, each with
    `balance_after`: the sum of the user's amounts up to and including it.

    One statement: the page, and one SUM up to its newest entry (the balance after it); each
    older entry's balance is the one after it less its amount, since a page holds every entry
    of the user between its first and its last. Being one statement, the sum and the page see
    the same rows, even while other entries are being written.
    """
    query = select(LedgerEntry).where(LedgerEntry.user_id == user_id)
    if before is not None:
        query = query.where(LedgerEntry.id < before)
    page = query.order_by(LedgerEntry.id.desc()).limit(limit + 1).cte("page")
    newest = select(func.max(page.c.id)).correlate(None).scalar_subquery()
    balance = (
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.user_id == user_id, LedgerEntry.id <= newest)
        .correlate(None)
        .scalar_subquery()
    )
    rows = db.session.execute(
        select(page, balance.label("balance")).order_by(page.c.id.desc())
    ).all()
    lines = []
    after = rows[0].balance if rows else 0
    for row in rows[:limit]:
        lines.append(LedgerLine(row, after))
        after -= row.amount
    return LedgerPage(lines, len(rows) > limit)
