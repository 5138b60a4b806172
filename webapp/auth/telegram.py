"""Telegram sign-in: the Login Widget's payload and a Mini App's `initData`, checked as Telegram
documents it, then the user they name, created or updated.

Both are `key=value` fields signed by Telegram with HMAC-SHA256 over the fields sorted by key,
one per line, `hash` left out. Only the key differs: SHA-256 of the bot token for the widget
(core.telegram.org/widgets/login), HMAC-SHA256 of the bot token keyed with "WebAppData" for a
Mini App (core.telegram.org/bots/webapps).
"""

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import User

# Telegram's payloads carry no nonce; refusing old ones limits how long a leaked one works.
MAX_AGE_SECONDS = 24 * 60 * 60
# A server whose clock runs a little behind Telegram's must still accept a fresh payload.
CLOCK_SKEW_SECONDS = 60


class TelegramAuthError(Exception):
    """The payload is not Telegram's for this bot, or too old; the message says which."""


@dataclass(frozen=True)
class TelegramUser:
    id: int
    username: str | None
    first_name: str | None
    last_name: str | None

    @property
    def full_name(self):
        return " ".join(part for part in (self.first_name, self.last_name) if part) or None


def widget_secret(bot_token):
    return hashlib.sha256(bot_token.encode()).digest()


def mini_app_secret(bot_token):
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def data_check_string(fields):
    """Every field but `hash`, sorted by key, as `key=value` lines."""
    return "\n".join(f"{key}={value}" for key, value in sorted(fields.items()) if key != "hash")


def verify_login_widget(fields, bot_token, now=None):
    """The user of a Login Widget payload ({id, first_name, …, auth_date, hash} as strings)."""
    _check_signature(fields, widget_secret(bot_token), now)
    try:
        return TelegramUser(
            id=int(fields["id"]),
            username=fields.get("username") or None,
            first_name=fields.get("first_name") or None,
            last_name=fields.get("last_name") or None,
        )
    except (KeyError, ValueError):
        raise TelegramAuthError("The Telegram sign-in data names no user.") from None


def verify_mini_app(init_data, bot_token, now=None):
    """The user of a Mini App's `initData` (the query string Telegram hands the app)."""
    pairs = parse_qsl(init_data or "", keep_blank_values=True)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise TelegramAuthError("The Telegram sign-in data repeats a field.")
    _check_signature(fields, mini_app_secret(bot_token), now)
    try:
        user = json.loads(fields["user"])
        return TelegramUser(
            id=int(user["id"]),
            username=user.get("username") or None,
            first_name=user.get("first_name") or None,
            last_name=user.get("last_name") or None,
        )
    except (KeyError, ValueError, TypeError, AttributeError):
        raise TelegramAuthError("The Telegram sign-in data names no user.") from None


def _check_signature(fields, secret, now):
    expected = hmac.new(secret, data_check_string(fields).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(fields.get("hash", "")).lower()):
        raise TelegramAuthError("The Telegram sign-in data is not signed for this bot.")
    try:
        signed_at = int(fields["auth_date"])
    except (KeyError, ValueError):
        raise TelegramAuthError("The Telegram sign-in data has no auth_date.") from None
    age = (time.time() if now is None else now) - signed_at
    if age > MAX_AGE_SECONDS or age < -CLOCK_SKEW_SECONDS:
        raise TelegramAuthError("The Telegram sign-in data is too old: sign in again.")


def user_for_telegram(telegram_user):
    """The user with this Telegram id, created on first sign-in; their display name refreshed.

    The handle (`name`) is the Telegram username when it is free, else `tg<id>`; it does not
    change afterwards, since operators use it in commands. The sign-in's unit of work: it
    commits.
    """
    user = db.session.scalar(select(User).where(User.telegram_id == telegram_user.id))
    if user is None:
        user = _create_telegram_user(telegram_user)
    user.display_name = telegram_user.full_name or telegram_user.username
    db.session.commit()
    return user


def _create_telegram_user(telegram_user):
    name = f"tg{telegram_user.id}"
    wanted = telegram_user.username
    if wanted and len(wanted) <= 64:
        taken = db.session.scalar(select(User.id).where(User.name == wanted))
        name = name if taken else wanted
    user = User(name=name, telegram_id=telegram_user.id)
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError:
        # The same person signing in twice at once: the other request created them. This is
        # the sign-in's first write, so rolling the whole session back loses nothing.
        db.session.rollback()
        existing = db.session.scalar(select(User).where(User.telegram_id == telegram_user.id))
        if existing is None:
            raise
        return existing
    return user
