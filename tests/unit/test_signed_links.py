"""Signed image links: they verify, they expire, and they stay stable between page polls."""

from webapp.storage import sign, verify

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
