"""Signing in: one-time links, Telegram (widget and Mini App), API tokens; the session cookie."""

import re
import threading
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from tests.support import (
    HTMX,
    create_user,
    csrf_token_from,
    make_app,
    signed_in_browser,
)
from tests.unit.test_telegram import BOT_TOKEN, MINI_APP, SIGNED_AT, WIDGET
from webapp.auth import login_links
from webapp.extensions import db
from webapp.models import LoginLink, User

TELEGRAM = {"TELEGRAM_BOT_TOKEN": BOT_TOKEN, "TELEGRAM_BOT_NAME": "batchgen_test_bot"}


def login_link(app, name="alice"):
    """The path of a fresh login link, as `flask --app app users login-link NAME` prints it."""
    result = app.test_cli_runner().invoke(args=["users", "login-link", name])
    assert result.exit_code == 0, result.output
    url = result.output.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:5000/auth/link/")
    return url.removeprefix("http://127.0.0.1:5000")


def use(http, path):
    """Post the link's form, as its button does (with the session's CSRF token)."""
    token = csrf_token_from(http.get("/login").get_data(as_text=True))
    return http.post(path, data={"csrf_token": token})


@pytest.fixture
def telegram_app(tmp_path, database_url, monkeypatch):
    """An app with a Telegram bot; its clock is where the signed test payloads are fresh."""
    monkeypatch.setattr("webapp.auth.telegram.time.time", lambda: SIGNED_AT + 60)
    return make_app(tmp_path, database_url, **TELEGRAM)


def test_a_login_link_signs_in_once(app, user):
    path = login_link(app)
    http = app.test_client()

    page = http.get(path)
    signed_in = use(http, path)
    again = use(app.test_client(), path)

    assert page.status_code == 200 and "Sign in as alice" in page.get_data(as_text=True)
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/"
    assert http.get("/api/me").get_json()["name"] == "alice"
    assert again.status_code == 410
    assert "no longer works" in again.get_data(as_text=True)


def test_a_used_link_opened_while_signed_in_says_who_you_are_and_goes_on(app, user):
    path = login_link(app)
    http = app.test_client()
    use(http, path)

    page = http.get(path)

    html = page.get_data(as_text=True)
    assert page.status_code == 410
    assert "<h1>You are signed in as alice</h1>" in html
    assert re.search(r'<a class="button" id="go-on" href="/">New batch →</a>', html)
    assert "no longer works" not in html and "flask" not in html


def _words(html):
    """The text a person reads in <main>, without tags or line breaks."""
    main = html[html.index("<main") : html.index("</main>")]
    return " ".join(re.sub(r"<[^>]+>", " ", main).split())


def test_a_used_link_tells_a_signed_out_person_how_to_get_in(app, telegram_app, user):
    """Both apps are on the same database, where alice is."""
    for built, way in (
        (app, "Ask whoever runs this service for a new link."),
        (telegram_app, "Sign in with Telegram, or ask whoever runs this service"),
    ):
        path = login_link(built)
        use(built.test_client(), path)

        words = _words(built.test_client().get(path).get_data(as_text=True))

        assert "This sign-in link no longer works" in words and way in words
        assert "flask" not in words and "login-link" not in words


def test_the_login_page_says_how_a_person_gets_in_without_operator_commands(app, telegram_app):
    plain = _words(app.test_client().get("/login").get_data(as_text=True))
    with_bot = _words(telegram_app.test_client().get("/login").get_data(as_text=True))

    assert "To get in, ask whoever runs this service for a sign-in link." in plain
    assert (
        "Sign in with your Telegram account, or with a sign-in link from whoever runs" in with_bot
    )
    for words in (plain, with_bot):
        assert "flask" not in words and "make run" not in words and "NAME" not in words


def test_opening_a_login_link_does_not_spend_it(app, user):
    """A chat's link preview fetches the URL: only the button signs in."""
    path = login_link(app)

    app.test_client().get(path)
    app.test_client().get(path)

    assert use(app.test_client(), path).status_code == 303


def test_a_login_link_expires_after_15_minutes(app, user):
    path = login_link(app)
    with app.app_context():
        link = db.session.scalar(select(LoginLink))
        link.expires_at -= timedelta(minutes=15)
        db.session.commit()

    assert app.test_client().get(path).status_code == 410
    assert use(app.test_client(), path).status_code == 410


def test_only_the_hash_of_a_login_link_is_stored(app, user):
    token = login_link(app).rsplit("/", 1)[1]

    with app.app_context():
        stored = db.session.scalar(select(LoginLink.token_sha256))
    assert token not in stored and len(stored) == 64


def test_two_clicks_at_once_sign_in_only_once(app, user):
    with app.app_context():
        token = login_links.create_login_link(user[0])
        db.session.commit()
    barrier = threading.Barrier(6)
    winners = []

    def click():
        with app.app_context():
            barrier.wait()
            winners.append(login_links.use_login_link(token))

    threads = [threading.Thread(target=click) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(winner is not None for winner in winners) == 1


def test_the_login_link_command_refuses_an_unknown_user(app):
    result = app.test_cli_runner().invoke(args=["users", "login-link", "nobody"])

    assert result.exit_code != 0 and "no user named" in result.output


def test_without_a_bot_token_there_is_no_telegram_sign_in(app):
    html = app.test_client().get("/login").get_data(as_text=True)

    assert "telegram.org" not in html and '<script src="http' not in html
    assert app.test_client().post("/auth/telegram").status_code in (400, 404)


def test_with_a_bot_the_login_page_shows_telegrams_widget(telegram_app):
    html = telegram_app.test_client().get("/login").get_data(as_text=True)

    assert 'src="https://telegram.org/js/telegram-widget.js?22"' in html
    assert 'data-telegram-login="batchgen_test_bot"' in html
    assert 'id="mini-app-form"' in html


def _post_widget(http, fields):
    token = csrf_token_from(http.get("/login").get_data(as_text=True))
    return http.post("/auth/telegram", data={**fields, "csrf_token": token})


def test_a_telegram_widget_sign_in_creates_the_user_and_signs_in(telegram_app):
    http = telegram_app.test_client()

    response = _post_widget(http, WIDGET)

    assert response.status_code == 303
    me = http.get("/api/me").get_json()
    assert me["name"] == "ada_l" and me["credits"] == 0
    assert "Ada Lovelace · 0⭐" in http.get("/").get_data(as_text=True)
    with telegram_app.app_context():
        assert db.session.scalar(select(User.telegram_id)) == 987654321


def test_signing_in_again_updates_the_same_user(telegram_app):
    _post_widget(telegram_app.test_client(), WIDGET)
    with telegram_app.app_context():
        db.session.execute(db.update(User).values(display_name="Old name"))
        db.session.commit()

    _post_widget(telegram_app.test_client(), WIDGET)

    with telegram_app.app_context():
        users = db.session.scalars(select(User)).all()
        assert [(u.name, u.display_name) for u in users] == [("ada_l", "Ada Lovelace")]


def test_a_telegram_username_already_taken_gets_a_name_of_its_own(telegram_app):
    create_user(telegram_app, "ada_l")

    _post_widget(telegram_app.test_client(), WIDGET)

    with telegram_app.app_context():
        assert (
            db.session.scalar(select(User.name).where(User.telegram_id == 987654321))
            == "tg987654321"
        )


def test_a_tampered_telegram_payload_does_not_sign_in(telegram_app):
    http = telegram_app.test_client()

    response = _post_widget(http, {**WIDGET, "id": "111111111"})

    assert response.status_code == 303 and response.headers["Location"].startswith("/login")
    assert "not signed for this bot" in http.get("/login").get_data(as_text=True)
    assert http.get("/api/me").status_code == 401
    with telegram_app.app_context():
        assert db.session.scalar(select(User.id)) is None


def test_a_telegram_payload_needs_the_pages_csrf_token(telegram_app):
    response = telegram_app.test_client().post("/auth/telegram", data=WIDGET)

    assert response.status_code == 400


def test_a_mini_app_signs_in_with_its_init_data(telegram_app):
    http = telegram_app.test_client()
    token = csrf_token_from(http.get("/login").get_data(as_text=True))

    response = http.post(
        "/auth/telegram/mini-app?next=/batches",
        data={"initData": urlencode(MINI_APP), "csrf_token": token},
    )

    assert response.status_code == 303 and response.headers["Location"] == "/batches"
    assert http.get("/api/me").get_json()["name"] == "ada_l"


def test_tampered_mini_app_init_data_does_not_sign_in(telegram_app):
    http = telegram_app.test_client()
    token = csrf_token_from(http.get("/login").get_data(as_text=True))
    forged = urlencode({**MINI_APP, "user": MINI_APP["user"].replace("ada_l", "root")})

    http.post("/auth/telegram/mini-app", data={"initData": forged, "csrf_token": token})

    assert http.get("/api/me").status_code == 401


def test_sign_in_with_a_token_sets_the_telegram_session_cookie(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post("/login", data={"token": user[1], "csrf_token": csrf_token_from(page)})

    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("telegram_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert http.get("/api/me").get_json()["name"] == "alice"


def test_a_request_answered_after_the_sign_in_leaves_the_new_session_cookie_alone(app, user):
    """A browser sends the sign-in page's own requests (its favicon, say) with the anonymous cookie;
    when one is answered after the sign-in, a Set-Cookie in it would sign the person out again."""
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)
    anonymous = http.get_cookie("telegram_session").value
    signed_in = http.post("/login", data={"token": user[1], "csrf_token": csrf_token_from(page)})
    assert signed_in.status_code == 303

    late = app.test_client()
    late.set_cookie("telegram_session", anonymous)
    for path in ("/favicon.ico", "/login", "/", "/upload/cost"):
        answer = late.get(path)
        assert "Set-Cookie" not in answer.headers, (path, answer.headers["Set-Cookie"])
    assert http.get("/api/me").get_json()["name"] == "alice"


def test_the_session_cookie_is_secure_when_the_site_is_https(tmp_path, database_url):
    app = make_app(tmp_path, database_url, PUBLIC_BASE_URL="https://img.example.com")
    _, token = create_user(app)
    http = app.test_client()
    page = http.get("/login", base_url="https://img.example.com").get_data(as_text=True)

    response = http.post(
        "/login",
        data={"token": token, "csrf_token": csrf_token_from(page)},
        base_url="https://img.example.com",
        # Over https a form post must come from the site's own pages (Flask-WTF's strict check).
        headers={"Referer": "https://img.example.com/login"},
    )

    assert response.status_code == 303
    assert "; Secure" in response.headers["Set-Cookie"]


def test_a_wrong_token_does_not_sign_in(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post("/login", data={"token": "bg_wrong", "csrf_token": csrf_token_from(page)})

    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)


def test_forms_without_a_csrf_token_are_refused(app, user):
    assert app.test_client().post("/login", data={"token": user[1]}).status_code == 400


def test_sign_in_never_redirects_off_site(app, user):
    http = app.test_client()
    page = http.get("/login").get_data(as_text=True)

    response = http.post(
        "/login?next=//evil.example/x", data={"token": user[1], "csrf_token": csrf_token_from(page)}
    )

    assert response.headers["Location"] == "/"


def test_pages_send_people_without_a_session_to_sign_in(client):
    response = client.get("/batches")

    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=/batches"


def test_htmx_requests_without_a_session_get_hx_redirect_back_to_their_page(client):
    response = client.get(
        "/batches/batch_x",
        headers={**HTMX, "HX-Current-URL": "http://localhost/batches/batch_x?tab=1"},
    )

    assert response.status_code == 401
    assert response.get_data() == b""  # nothing that could be swapped into the grid
    assert response.headers["HX-Redirect"] == "/login?next=/batches/batch_x?tab%3D1"


def test_an_htmx_fragment_url_is_never_the_page_to_come_back_to(client):
    response = client.get("/upload/cost?imageCount=2", headers=HTMX)

    assert response.status_code == 401
    assert response.headers["HX-Redirect"] == "/login"


def test_sign_out_ends_the_session(app, user):
    http = signed_in_browser(app, user[1])
    page = http.get("/").get_data(as_text=True)

    response = http.post("/logout", data={"csrf_token": csrf_token_from(page)})

    assert response.headers["Location"] == "/login"
    assert http.get("/batches").status_code == 302


def test_a_signed_in_person_opening_the_login_page_goes_on(app, user):
    http = signed_in_browser(app, user[1])

    response = http.get("/login?next=/account")

    assert response.status_code == 302 and response.headers["Location"] == "/account"


def test_htmx_requests_carry_the_csrf_token_as_a_header(app, user):
    html = signed_in_browser(app, user[1]).get("/").get_data(as_text=True)

    header = re.search(r"<body hx-headers='\{\"X-CSRFToken\": \"([^\"]+)\"\}'>", html)
    assert header and header.group(1) == csrf_token_from(html)
