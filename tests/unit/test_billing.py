"""Debits are conditional, refunds happen once, and the ledger always adds up."""

import pytest
from sqlalchemy.exc import IntegrityError

from tests.support import create_user
from webapp import billing
from webapp.extensions import db
from webapp.models import Generation, LedgerKind


def test_a_debit_larger_than_the_balance_changes_nothing(app):
    user_id, _ = create_user(app, credits=5)
    with app.app_context():
        with pytest.raises(billing.InsufficientCredits) as refused:
            billing.debit(user_id, 6, LedgerKind.BATCH_DEBIT)

        assert (refused.value.required, refused.value.available) == (6, 5)
        assert billing.balance(user_id) == 5


def test_a_second_refund_of_the_same_generation_is_refused_by_the_database(app):
    user_id, _ = create_user(app, credits=5)
    with app.app_context():
        generation = Generation(
            user_id=user_id, model="flux-2", prompt="p", quality="1k", aspect_ratio="1:1",
            provider="local", cost=3,
        )
        db.session.add(generation)
        db.session.flush()
        billing.debit(user_id, 3, LedgerKind.PHOTO_DEBIT, generation_id=generation.id)
        billing.refund_generation(generation)
        db.session.commit()

        billing.refund_generation(generation)
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()

        assert billing.balance(user_id) == 5
        assert billing.ledger_mismatches() == []


def test_grants_must_be_positive(app):
    user_id, _ = create_user(app, credits=0)
    with app.app_context(), pytest.raises(ValueError):
        billing.grant(user_id, 0)
