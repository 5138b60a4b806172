"""Signed image links: they verify, they expire, and they stay stable between page polls."""

import pytest
from flask import url_for

from tests.support import make_app
from webapp.storage import sign, verify
from webapp.storage.views import signed_url, url_signer

KEY = "results/batch_1/gen_1.png"


def test_a_signed_link_verifies_until_it_expires():
    params = sign(KEY, "secret", 3600, now=10_000)

    assert verify(KEY, params["expires"], params["signature"], "secret", now=10_000)
    assert not verify(KEY, params["expires"], params["signature"], "secret", now=20_000)


def test_it_lives_between_one_and_two_periods():
    params = sign(KEY, "secret", 3600, now=10_000)

    assert 3600 <= params["expires"] - 10_000 <= 7200


def test_the_link_does_not_change_between_polls():
    assert sign(KEY, "secret", 3600, now=10_000) == sign(KEY, "secret", 3600, now=10_002)


def test_another_key_secret_or_expiry_does_not_verify():
    params = sign(KEY, "secret", 3600, now=10_000)

    assert not verify("results/batch_1/gen_2.png", params["expires"], params["signature"], "secret")
    assert not verify(KEY, params["expires"], params["signature"], "other-secret")
    assert not verify(KEY, params["expires"] + 1, params["signature"], "secret")
    assert not verify(KEY, "soon", params["signature"], "secret")


@pytest.mark.parametrize("public_base_url", [None, "https://img.example.com"])
def test_links_are_the_ones_url_for_builds(tmp_path, public_base_url):
    """url_signer writes links itself, routing once per answer: they stay url_for's, exactly."""
    app = make_app(tmp_path, PUBLIC_BASE_URL=public_base_url)
    with app.test_request_context("/", base_url="http://example.org:8080/under"):
        params = sign(KEY, app.config["SECRET_KEY"], app.config["SIGNED_URL_SECONDS"])
        link = url_for("media.download", key=KEY, _external=not public_base_url, **params)
        expected = (public_base_url or "") + link

        assert url_signer()(KEY) == expected
        assert signed_url(KEY) == expected
