"""A user's history: their batches newest first, and their ledger newest first with the balance
right after each entry. The API reads them a page at a time by keyset (paging.py); the history
page shares `batches_of`, its order and its filter (by status, and by a piece of the prompt).
"""

import unicodedata
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import and_, func, or_, select

from ..extensions import db
from ..models import Batch, LedgerEntry
from .paging import BATCH_STATUSES
from .progress import progress_of

MAX_SEARCH = 200  # characters of a prompt search; prompts themselves are longer, searches not


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


@dataclass(frozen=True)
class HistoryFilter:
    """What the history page was asked to show: statuses (() for all), a prompt search ("" for
    none), and why any part of the ask was set aside."""

    statuses: tuple = ()
    search: str = ""
    problems: tuple = ()

    @property
    def active(self):
        return bool(self.statuses or self.search)

    def query_args(self):
        """The filter as query-string arguments, for links that keep it (the pager's)."""
        args = {"status": list(self.statuses)} if self.statuses else {}
        return args | ({"q": self.search} if self.search else {})


def history_filter(status_values, search):
    """The filter of the history page's query string: unknown statuses and an over-long search
    are left out, each with a sentence saying so, never an error."""
    problems = []
    statuses = [value.strip() for value in status_values if value and value.strip()]
    unknown = [value for value in statuses if value not in BATCH_STATUSES]
    if unknown:
        problems.append(
            f"Unknown status {', '.join(f'“{value[:40]}”' for value in unknown)} ignored: "
            f"a batch is {', '.join(BATCH_STATUSES)}."
        )
    # Control characters (a NUL above all, which PostgreSQL refuses and SQLite cuts at) are
    # in no prompt: they become spaces, and runs of spaces one.
    search = "".join(" " if unicodedata.category(char) == "Cc" else char for char in search or "")
    search = " ".join(search.split())
    if len(search) > MAX_SEARCH:
        problems.append(f"Search ignored: it is longer than {MAX_SEARCH} characters.")
        search = ""
    known = tuple(dict.fromkeys(value for value in statuses if value in BATCH_STATUSES))
    return HistoryFilter(known, search, tuple(problems))


def batches_of(user_id, statuses=None, search=None):
    """The user's batches (of these statuses, whose prompt holds `search`, when given), newest
    first: created_at, then id, descending, so rows created in the same instant still have one
    order. The search is a case-insensitive substring; its % and _ are plain characters."""
    query = select(Batch).where(Batch.user_id == user_id)
    if statuses:
        query = query.where(Batch.status.in_(statuses))
    if search:
        query = query.where(Batch.prompt.icontains(search, autoescape=True))
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
