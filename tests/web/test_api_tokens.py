"""API tokens a person can see, create and revoke: on the account page and from the CLI."""

import re
from datetime import timedelta

from sqlalchemy import select, update

from tests.support import csrf_token_from, signed_in_browser
from webapp.auth import TOUCH_INTERVAL
from webapp.extensions import db
from webapp.models import ApiToken, utcnow


def _token_rows(app, user_id):
    with app.app_context():
        return db.session.scalars(select(ApiToken).where(ApiToken.user_id == user_id)).all()


def _me(app, token):
    return app.test_client().get("/api/me", headers={"Authorization": f"Bearer {token}"})


def test_a_token_notes_when_it_was_used_without_writing_on_every_request(app, user, api_client):
    user_id, _ = user
    assert _token_rows(app, user_id)[0].last_used_at is None

    api_client.get("/api/me")
    [first] = _token_rows(app, user_id)
    api_client.get("/api/me")
    [again] = _token_rows(app, user_id)

    assert first.last_used_at is not None
    assert again.last_used_at == first.last_used_at  # within TOUCH_INTERVAL: not written again
    with app.app_context():
        db.session.execute(
            update(ApiToken).values(last_used_at=utcnow() - TOUCH_INTERVAL - timedelta(seconds=1))
        )
        db.session.commit()
    # The touch is checked when the token is looked up, not at a token cache hit (at most
    # TOKEN_CACHE_SECONDS later): forget the cached user, as its seconds running out would.
    app.extensions["batchgen.token_cache"].forget(user_id=user_id)
    api_client.get("/api/me")
    assert _token_rows(app, user_id)[0].last_used_at > first.last_used_at


def test_the_account_page_creates_a_token_shown_once_that_works(app, user):
    browser = signed_in_browser(app, user[1])
    page = browser.get("/account").get_data(as_text=True)

    created = browser.post(
        "/account/tokens", data={"label": "<b>my script</b>", "csrf_token": csrf_token_from(page)}
    )

    html = created.get_data(as_text=True)
    token = re.search(r'id="new-token">.*?<code>(bg_[^<]+)</code>', html, re.S).group(1)
    assert "&lt;b&gt;my script&lt;/b&gt;" in html  # the label, escaped
    assert _me(app, token).status_code == 200
    assert token not in browser.get("/account").get_data(as_text=True)  # shown that once
    assert "bg_" not in (created.headers.get("Set-Cookie") or "")


def test_a_revoked_token_stops_working_at_once(app, user):
    user_id, token = user
    browser = signed_in_browser(app, token)
    page = browser.get("/account").get_data(as_text=True)
    [row] = _token_rows(app, user_id)

    answer = browser.post(
        f"/account/tokens/{row.id}/revoke", data={"csrf_token": csrf_token_from(page)}
    )

    assert answer.status_code == 303
    assert _me(app, token).status_code == 401
    assert _token_rows(app, user_id) == []


def test_nobody_revokes_another_users_token(app, user):
    from tests.support import create_user

    other_id, other_token = create_user(app, "mallory")
    [theirs] = _token_rows(app, user[0])
    browser = signed_in_browser(app, other_token)
    page = browser.get("/account").get_data(as_text=True)

    answer = browser.post(
        f"/account/tokens/{theirs.id}/revoke", data={"csrf_token": csrf_token_from(page)}
    )

    assert answer.status_code == 404
    assert len(_token_rows(app, user[0])) == 1


def test_the_cli_lists_and_revokes_tokens(app, user):
    runner = app.test_cli_runner()
    user_id, token = user
    [row] = _token_rows(app, user_id)

    listed = runner.invoke(args=["users", "tokens", "alice"])
    assert listed.exit_code == 0
    assert listed.output.startswith(f"{row.id}\tcli\tcreated ")
    assert "never used" in listed.output
    assert token not in listed.output

    revoked = runner.invoke(args=["users", "revoke-token", str(row.id)])
    assert revoked.exit_code == 0
    assert runner.invoke(args=["users", "revoke-token", str(row.id)]).exit_code != 0
    assert runner.invoke(args=["users", "tokens", "alice"]).output == "alice has no API token.\n"
