"""One-time sign-in links, for operators and local use (`flask --app app users login-link NAME`).

Only the token's SHA-256 is stored, as for API tokens. Using a link deletes its row with a
conditional DELETE, so two clicks (two tabs, a retried request) can never both sign in.
"""

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, select

from ..extensions import db
from ..models import LoginLink, User, utcnow

LINK_LIFETIME = timedelta(minutes=15)


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def create_login_link(user_id):
    """A new token that signs the user in once within LINK_LIFETIME; the caller commits.

    Links that expired are deleted on the way: nothing else needs them.
    """
    now = utcnow()
    db.session.execute(delete(LoginLink).where(LoginLink.expires_at <= now))
    token = secrets.token_urlsafe(32)
    db.session.add(
        LoginLink(user_id=user_id, token_sha256=_digest(token), expires_at=now + LINK_LIFETIME)
    )
    return token


def user_for_login_link(token):
    """Whose unused, unexpired link this is (None otherwise), without using it up."""
    return db.session.scalar(
        select(User)
        .join(LoginLink, LoginLink.user_id == User.id)
        .where(LoginLink.token_sha256 == _digest(token), LoginLink.expires_at > utcnow())
    )


def use_login_link(token):
    """Spend the link and answer its user, or None if it is unknown, expired or already used.

    Of two concurrent calls only one DELETE removes the row (the other's matches nothing).
    """
    user = user_for_login_link(token)
    if user is None:
        db.session.rollback()
        return None
    spent = db.session.execute(
        delete(LoginLink).where(
            LoginLink.token_sha256 == _digest(token), LoginLink.expires_at > utcnow()
        )
    )
    db.session.commit()
    return user if spent.rowcount == 1 else None
