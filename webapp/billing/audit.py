"""The money audit `flask --app app ledger audit` runs: every rule the ledger keeps, checked.

- every user's `credits == sum(ledger)`, and nobody below zero;
- one debit per batch, of its `total_cost`; one per single photo, of its cost;
- at most one refund per generation, of its cost; refunds only for images that did not succeed
  (failed or cancelled), and every failed or cancelled image refunded; no refund naming no image;
- a batch's `refunded` is the sum of its refunds.

Each rule is one grouped query over the whole table, never a query per user or batch, so the
audit stays quick on a large ledger. It only reads, and ends its read before it returns.
"""

from dataclasses import dataclass, field

from sqlalchemy import and_, func, or_, select

from ..extensions import db
from ..models import Batch, Generation, GenerationStatus, LedgerEntry, LedgerKind, User

REFUNDED = (GenerationStatus.FAILED, GenerationStatus.CANCELLED)


@dataclass(frozen=True)
class Finding:
    subject: str  # what is wrong: "user 3 (alice)", "batch batch_…", "generation gen_…"
    problem: str

    def __str__(self):
        return f"{self.subject}: {self.problem}"


@dataclass
class AuditReport:
    users: int = 0
    entries: int = 0
    batches: int = 0
    generations: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self):
        return not self.findings

    def summary(self):
        counted = (
            f"{self.users} users, {self.entries} ledger rows, {self.batches} batches, "
            f"{self.generations} images"
        )
        if self.ok:
            return (
                f"Ledger audit passed: {counted}; every balance is the sum of its ledger, one "
                "debit per batch and photo, one refund per failed or cancelled image, none for "
                "a success."
            )
        return f"Ledger audit FAILED: {len(self.findings)} problem(s) in {counted}."


def audit():
    """Check every rule; answers an AuditReport listing each offender."""
    report = AuditReport(
        users=_count(User.id),
        entries=_count(LedgerEntry.id),
        batches=_count(Batch.id),
        generations=_count(Generation.id),
    )
    names = dict(db.session.execute(select(User.id, User.name)).all())
    for check in (_balances, _batch_debits, _photo_debits, _refunds, _batch_refunded, _loose):
        report.findings.extend(check(names))
    db.session.rollback()  # a read only: end it
    return report


def _count(column):
    return db.session.scalar(select(func.count(column)))


def _who(names, user_id):
    return f"user {user_id} ({names.get(user_id, '?')})"


def _grouped(key, kind):
    """Ledger rows of `kind` grouped by `key`: (key, n, total) as a subquery."""
    return (
        select(
            key.label("key"), func.count().label("n"), func.sum(LedgerEntry.amount).label("total")
        )
        .where(LedgerEntry.kind == kind, key.is_not(None))
        .group_by(key)
        .subquery()
    )


def _balances(names):
    total = (
        select(LedgerEntry.user_id, func.sum(LedgerEntry.amount).label("total"))
        .group_by(LedgerEntry.user_id)
        .subquery()
    )
    summed = func.coalesce(total.c.total, 0)
    rows = db.session.execute(
        select(User.id, User.credits, summed)
        .outerjoin(total, total.c.user_id == User.id)
        .where(or_(User.credits != summed, User.credits < 0))
        .order_by(User.id)
    ).all()
    for user_id, credits, summed_value in rows:
        if credits != summed_value:
            problem = f"credits {credits} but the ledger sums to {summed_value}"
        else:
            problem = f"credits {credits}, below zero"
        yield Finding(_who(names, user_id), problem)


def _batch_debits(names):
    debits = _grouped(LedgerEntry.batch_id, LedgerKind.BATCH_DEBIT)
    n, total = func.coalesce(debits.c.n, 0), func.coalesce(debits.c.total, 0)
    rows = db.session.execute(
        select(Batch.id, Batch.user_id, Batch.total_cost, n, total)
        .outerjoin(debits, debits.c.key == Batch.id)
        .where(or_(n != 1, total != -Batch.total_cost))
        .order_by(Batch.created_at, Batch.id)
    ).all()
    for batch_id, user_id, cost, count, amount in rows:
        if count != 1:
            problem = f"{count} debits (one expected)"
        else:
            problem = f"debited {-amount}, its total cost is {cost}"
        yield Finding(f"batch {batch_id} of {_who(names, user_id)}", problem)


def _photo_debits(names):
    debits = _grouped(LedgerEntry.generation_id, LedgerKind.PHOTO_DEBIT)
    n, total = func.coalesce(debits.c.n, 0), func.coalesce(debits.c.total, 0)
    rows = db.session.execute(
        select(Generation.id, Generation.user_id, Generation.cost, n, total)
        .outerjoin(debits, debits.c.key == Generation.id)
        .where(Generation.batch_id.is_(None), or_(n != 1, total != -Generation.cost))
        .order_by(Generation.created_at, Generation.id)
    ).all()
    for generation_id, user_id, cost, count, amount in rows:
        if count != 1:
            problem = f"{count} debits (one expected)"
        else:
            problem = f"debited {-amount}, its cost is {cost}"
        yield Finding(f"photo {generation_id} of {_who(names, user_id)}", problem)


def _refunds(names):
    refunds = _grouped(LedgerEntry.generation_id, LedgerKind.REFUND)
    refunded_status = Generation.status.in_(REFUNDED)
    rows = db.session.execute(
        select(
            Generation.id,
            Generation.batch_id,
            Generation.user_id,
            Generation.status,
            Generation.cost,
            refunds.c.n,
            refunds.c.total,
        )
        .outerjoin(refunds, refunds.c.key == Generation.id)
        .where(
            or_(
                refunds.c.n > 1,
                and_(refunds.c.n.is_not(None), ~refunded_status),
                and_(refunds.c.n.is_(None), refunded_status),
                and_(refunds.c.n == 1, refunds.c.total != Generation.cost),
            )
        )
        .order_by(Generation.created_at, Generation.id)
    ).all()
    for generation_id, batch_id, user_id, status, cost, count, amount in rows:
        where = f" in batch {batch_id}" if batch_id else ""
        subject = f"generation {generation_id}{where} of {_who(names, user_id)}"
        if count is None:
            yield Finding(subject, f"{status} but never refunded")
            continue
        if count > 1:
            yield Finding(subject, f"refunded {count} times (at most once)")
        if status not in REFUNDED:
            yield Finding(subject, f"refunded although its status is {status}")
        if count == 1 and amount != cost:
            yield Finding(subject, f"refunded {amount}, its cost is {cost}")


def _batch_refunded(names):
    refunds = _grouped(LedgerEntry.batch_id, LedgerKind.REFUND)
    total = func.coalesce(refunds.c.total, 0)
    rows = db.session.execute(
        select(Batch.id, Batch.user_id, Batch.refunded, total)
        .outerjoin(refunds, refunds.c.key == Batch.id)
        .where(Batch.refunded != total)
        .order_by(Batch.created_at, Batch.id)
    ).all()
    for batch_id, user_id, refunded, amount in rows:
        problem = f"says {refunded} refunded, its refunds sum to {amount}"
        yield Finding(f"batch {batch_id} of {_who(names, user_id)}", problem)


def _loose(names):
    """Refunds naming no image, and debits naming nothing they pay for."""
    rows = db.session.execute(
        select(LedgerEntry.id, LedgerEntry.user_id, LedgerEntry.kind).where(
            or_(
                and_(LedgerEntry.kind == LedgerKind.REFUND, LedgerEntry.generation_id.is_(None)),
                and_(LedgerEntry.kind == LedgerKind.BATCH_DEBIT, LedgerEntry.batch_id.is_(None)),
                and_(
                    LedgerEntry.kind == LedgerKind.PHOTO_DEBIT,
                    LedgerEntry.generation_id.is_(None),
                ),
            )
        )
    ).all()
    for entry_id, user_id, kind in rows:
        subject = f"ledger row {entry_id} of {_who(names, user_id)}"
        yield Finding(subject, f"a {kind} naming nothing")
