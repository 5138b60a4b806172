"""Who is calling: the session cookie (`telegram_session`) or `Authorization: Bearer <token>`.

API tokens are stored as their SHA-256 only; the token itself is shown once, when created.
People sign in through `views` (Telegram, one-time links, a token) to get the cookie.
"""

import hashlib
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

from flask import current_app, make_response, redirect, request, url_for
from sqlalchemy import delete, select, update

from ..errors import is_htmx, json_error, wants_json
from ..extensions import db, login_manager
from ..models import ApiToken, User, utcnow
from .token_cache import TokenCache

TOKEN_PREFIX = "bg_"
TOUCH_INTERVAL = timedelta(minutes=5)


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(user_id, name="cli"):
    """Make a new API token for the user; the caller commits. Answers the token (shown once)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.session.add(ApiToken(user_id=user_id, token_sha256=_digest(token), name=name))
    return token


def user_for_token(token):
    """The user a token belongs to, or None; notes when the token was used (at most every
    TOUCH_INTERVAL, so a client polling every second writes once in a while)."""
    if not token or not token.startswith(TOKEN_PREFIX):
        return None
    digest = _digest(token)
    cache = _token_cache()
    cached = cache.get(digest)
    if cached is not None:
        return cached
    found = db.session.execute(
        select(User, ApiToken.id, ApiToken.last_used_at)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_sha256 == digest)
    ).first()
    if found is None:
        return None
    user, token_id, last_used_at = found
    now = utcnow()
    if last_used_at is None or last_used_at < now - TOUCH_INTERVAL:
        db.session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
        )
        db.session.commit()  # its own small unit of work, before the request's
    cache.put(digest, token_id, user)
    return user


def _token_cache():
    """This app's TokenCache (token_cache.py): TOKEN_CACHE_SECONDS, 0 = off."""
    cache = current_app.extensions.get("batchgen.token_cache")
    if cache is None:
        cache = current_app.extensions.setdefault(
            "batchgen.token_cache", TokenCache(current_app.config["TOKEN_CACHE_SECONDS"])
        )
    return cache


def tokens_of(user_id):
    """The user's API tokens (never the tokens themselves), newest first."""
    return db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())
    ).all()


def revoke_token(token_id, user_id=None):
    """Delete an API token (only the user's own, when `user_id` is given); True if one was.
    Its own unit of work: it commits."""
    conditions = [ApiToken.id == token_id]
    if user_id is not None:
        conditions.append(ApiToken.user_id == user_id)
    result = db.session.execute(delete(ApiToken).where(*conditions))
    db.session.commit()
    _token_cache().forget(token_id=token_id)  # here at once; elsewhere within its seconds
    return result.rowcount == 1


@login_manager.user_loader
def load_user(user_id):
    try:
        return db.session.get(User, int(user_id))
    except (TypeError, ValueError):
        return None


@login_manager.request_loader
def load_user_from_bearer(req):
    header = req.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return user_for_token(token.strip())


@login_manager.unauthorized_handler
def unauthorized():
    """APIs get 401 JSON; pages go to the sign-in page (htmx requests via HX-Redirect)."""
    if wants_json():
        message = "Authentication required: send Authorization: Bearer <token> or a session cookie."
        response = json_error(message, 401)
        response.headers["WWW-Authenticate"] = 'Bearer realm="batchgen"'
        return response
    if is_htmx():
        # Back to the page the fragment belongs to, not to the fragment's own URL.
        current = urlsplit(request.headers.get("HX-Current-URL", ""))
        page = current.path + (f"?{current.query}" if current.query else "")
        response = make_response("", 401)
        response.headers["HX-Redirect"] = url_for("auth.login", next=page or None)
        return response
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def init_app(app):
    login_manager.init_app(app)
    # Off: nothing here asks for a "fresh" login, which is all that "basic" protection tracks, and
    # it wrote `_fresh` into anonymous sessions. That answer re-sent the cookie, and when it raced
    # a sign-in (the sign-in page's favicon request, say) it overwrote the new session cookie and
    # signed the person out again. A request that changes nothing in the session must send none.
    login_manager.session_protection = None
