"""Sign-in pages: Telegram (Login Widget and Mini App), one-time links, API tokens; sign-out."""

import re

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_user, logout_user

from . import user_for_token
from .login_links import use_login_link, user_for_login_link
from .telegram import TelegramAuthError, user_for_telegram, verify_login_widget, verify_mini_app

bp = Blueprint("auth", __name__)

BROWSER_DROPS = re.compile(r"[\t\n\r]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# The form fields our pages add to Telegram's own when they post them on.
OWN_FIELDS = ("csrf_token",)


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The sign-in page: Telegram when the server has a bot, else an API token."""
    if request.method == "POST":
        user = user_for_token(request.form.get("token", "").strip())
        if user is None:
            flash("That token is not valid.", "error")
            return _login_page(), 401
        return _signed_in(user)
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    return _login_page()


@bp.post("/logout")
def logout():
    logout_user()
    return redirect(url_for("auth.login"), code=303)


@bp.post("/auth/telegram")
def telegram():
    """The Login Widget's payload, posted on by our page with its CSRF token."""
    fields = {key: value for key, value in request.form.items() if key not in OWN_FIELDS}
    return _telegram_sign_in(lambda token: verify_login_widget(fields, token))


@bp.post("/auth/telegram/mini-app")
def telegram_mini_app():
    """A Telegram Mini App's `initData`, posted by the login page when Telegram opened it."""
    init_data = request.form.get("initData", "")
    return _telegram_sign_in(lambda token: verify_mini_app(init_data, token))


@bp.route("/auth/link/<token>", methods=["GET", "POST"])
def login_link(token):
    """A one-time link: the GET only asks, so a link preview cannot spend it; the POST signs in."""
    if request.method == "POST":
        user = use_login_link(token)
    else:
        user = user_for_login_link(token)
    if user is None:
        telegram = bool(current_app.config["TELEGRAM_BOT_TOKEN"])
        return render_template("auth/link.html", user=None, telegram=telegram), 410
    if request.method == "POST":
        return _signed_in(user)
    return render_template("auth/link.html", user=user)


def _telegram_sign_in(verify):
    bot_token = current_app.config["TELEGRAM_BOT_TOKEN"]
    if not bot_token:
        abort(404)
    try:
        telegram_user = verify(bot_token)
    except TelegramAuthError as error:
        flash(str(error), "error")
        return redirect(url_for("auth.login", next=request.args.get("next")), code=303)
    return _signed_in(user_for_telegram(telegram_user))


def _signed_in(user):
    login_user(user)
    return redirect(_safe_next(request.args.get("next")), code=303)


def _login_page():
    config = current_app.config
    return render_template(
        "auth/login.html",
        next=_safe_next(request.args.get("next")),
        telegram_bot=config["TELEGRAM_BOT_NAME"] if config["TELEGRAM_BOT_TOKEN"] else None,
        mini_app=bool(config["TELEGRAM_BOT_TOKEN"]),
    )


def _safe_next(target):
    """Only same-site paths: never redirect a signed-in user to another host.

    Browsers drop tabs and line breaks from a URL (`/%09/evil.example` reaches us as a tab,
    and a browser goes to `//evil.example`) and read a backslash as a slash: those are dropped
    or refused before the path is checked, and any other control character refuses it.
    """
    path = BROWSER_DROPS.sub("", target or "")
    if path.startswith("/") and not path.startswith("//") and "\\" not in path:
        if not CONTROL.search(path):
            return path
    return url_for("web.index")
