"""Credits: conditional debits, exactly-once refunds, grants, and the ledger invariant.

Every change of a balance happens in the caller's transaction together with its ledger row, so
`users.credits == sum(ledger.amount)` holds for every user after every commit. Nothing here
commits or rolls back: the caller owns the unit of work (see webapp.generation).
"""

from sqlalchemy import func, select, update

from ..extensions import db
from ..models import Batch, LedgerEntry, LedgerKind, User


class InsufficientCredits(Exception):
    """The balance does not cover the price."""

    def __init__(self, required, available):
        super().__init__(f"required {required}, available {available}")
        self.required = required
        self.available = available


def balance(user_id):
    """The user's balance as the database has it now."""
    return db.session.scalar(select(User.credits).where(User.id == user_id))


def debit(user_id, amount, kind, batch_id=None, generation_id=None):
    """Take `amount` if the balance covers it, with its ledger row; the caller commits.

    One conditional UPDATE: two concurrent debits can never both pass on the same credits,
    and the balance can never go below zero.
    """
    result = db.session.execute(
        update(User)
        .where(User.id == user_id, User.credits >= amount)
        .values(credits=User.credits - amount)
    )
    if result.rowcount != 1:
        # The UPDATE changed nothing; the caller's rollback ends the transaction.
        raise InsufficientCredits(amount, balance(user_id))
    db.session.add(
        LedgerEntry(
            user_id=user_id,
            amount=-amount,
            kind=kind,
            batch_id=batch_id,
            generation_id=generation_id,
        )
    )


def refund_generation(generation, note=None):
    """Give back a failed or cancelled generation's cost; the caller commits.

    Call it only in the transaction whose fenced UPDATE moved the generation to a terminal
    failure; UNIQUE(generation_id, kind) makes a second refund fail loudly instead of paying.
    """
    amount = generation.cost
    db.session.execute(
        update(User).where(User.id == generation.user_id).values(credits=User.credits + amount)
    )
    if generation.batch_id:
        db.session.execute(
            update(Batch)
            .where(Batch.id == generation.batch_id)
            .values(refunded=Batch.refunded + amount)
        )
    db.session.add(
        LedgerEntry(
            user_id=generation.user_id,
            amount=amount,
            kind=LedgerKind.REFUND,
            batch_id=generation.batch_id,
            generation_id=generation.id,
            note=note,
        )
    )


def grant(user_id, amount, note=None):
    """Add credits (an operator's grant), with its ledger row; the caller commits."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    db.session.execute(
        update(User).where(User.id == user_id).values(credits=User.credits + amount)
    )
    db.session.add(LedgerEntry(user_id=user_id, amount=amount, kind=LedgerKind.GRANT, note=note))


def ledger_mismatches():
    """Users whose balance differs from the sum of their ledger: [(user_id, credits, sum)]."""
    ledger_sum = (
        select(LedgerEntry.user_id, func.coalesce(func.sum(LedgerEntry.amount), 0).label("total"))
        .group_by(LedgerEntry.user_id)
        .subquery()
    )
    rows = db.session.execute(
        select(User.id, User.credits, func.coalesce(ledger_sum.c.total, 0))
        .outerjoin(ledger_sum, ledger_sum.c.user_id == User.id)
    ).all()
    return [(uid, credits, total) for uid, credits, total in rows if credits != total]

