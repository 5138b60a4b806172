"""A person in Chromium, on a phone-sized window: the sign-in page says how to get in, and a used
link opened while signed in says who they are and leads on."""

import threading

import pytest
from werkzeug.serving import make_server

from tests.browser.test_live_grid import OVERFLOWS, chromium, console_errors  # noqa: F401
from tests.support import create_user, make_app
from webapp.auth.login_links import create_login_link
from webapp.extensions import db

pytestmark = [pytest.mark.browser]


@pytest.fixture
def site(tmp_path):
    """The app on a real HTTP port (no consumer: these pages make no images)."""
    app = make_app(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_the_sign_in_pages_speak_to_the_person_signing_in(chromium, site):  # noqa: F811
    app, base = site
    user_id, _ = create_user(app, "alice")
    with app.app_context():
        token = create_login_link(user_id)
        db.session.commit()
    page = chromium.new_page(viewport={"width": 360, "height": 740})
    errors = console_errors(page)

    page.goto(f"{base}/login")
    how = page.locator("#how-to-get-in").inner_text()
    login_overflows = page.evaluate(OVERFLOWS)
    login_words = page.locator("main").inner_text()

    page.goto(f"{base}/auth/link/{token}")
    page.click("#use-link")
    page.wait_for_url(f"{base}/")
    page.goto(f"{base}/auth/link/{token}")  # used, and opened again while signed in
    heading = page.locator("h1").inner_text()
    page.click("text=New batch →")
    page.wait_for_url(f"{base}/")

    assert how == "To get in, ask whoever runs this service for a sign-in link."
    assert "flask" not in login_words and not login_overflows
    assert heading == "You are signed in as alice"
    assert errors == []
    page.close()
