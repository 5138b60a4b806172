"""Settings come in layers: defaults, instance/config.py, the environment, then the caller."""

import pytest

from webapp import create_app
from webapp.config import defaults, from_environment


def test_the_environment_overrides_instance_config_which_overrides_defaults(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text("MAX_BATCH_IMAGES = 20\nDEFAULT_CONCURRENCY = 2\n")
    monkeypatch.setenv("DEFAULT_CONCURRENCY", "3")
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://img.example.com/")

    app = create_app(instance_path=str(tmp_path))

    assert app.config["MAX_BATCH_IMAGES"] == 20  # from instance/config.py
    assert app.config["DEFAULT_CONCURRENCY"] == 3  # the environment wins
    assert app.config["PUBLIC_BASE_URL"] == "https://img.example.com"
    assert app.config["MAX_IMAGE_PIXELS"] == 40_000_000  # the default
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'app.db'}"


def test_without_secret_key_one_is_created_once_in_the_instance_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)

    first = create_app(instance_path=str(tmp_path)).config["SECRET_KEY"]
    second = create_app(instance_path=str(tmp_path)).config["SECRET_KEY"]

    assert first == second and len(first) == 64
    assert (tmp_path / "secret_key").read_text() == first


def test_empty_variables_count_as_unset_and_bad_numbers_are_named():
    assert from_environment({"REDIS_URL": "", "LEASE_SECONDS": "60"}) == {"LEASE_SECONDS": 60}
    with pytest.raises(ValueError, match="MAX_ATTEMPTS='many'"):
        from_environment({"MAX_ATTEMPTS": "many"})


def test_the_kie_settings_come_from_the_environment():
    environ = {
        "KIE_API_KEY": "sk-1",
        "KIE_API_BASE": "http://127.0.0.1:8099/",
        "KIE_UPLOAD_BASE": "http://127.0.0.1:8099",
        "KIE_WEBHOOK_HMAC_KEY": "whk",
    }

    assert from_environment(environ) == {
        "KIE_API_KEY": "sk-1",
        "KIE_API_BASE": "http://127.0.0.1:8099",
        "KIE_UPLOAD_BASE": "http://127.0.0.1:8099",
        "KIE_WEBHOOK_HMAC_KEY": "whk",
    }


def test_polls_follow_kies_cadence_and_give_up_after_15_minutes(tmp_path):
    config = defaults(str(tmp_path))
    delays, elapsed = config["POLL_DELAYS"], 0
    for delay in delays:
        if elapsed < 30:
            assert 2 <= delay <= 3, (elapsed, delay)
        elif elapsed < 120:
            assert 5 <= delay <= 10, (elapsed, delay)
        else:
            assert 15 <= delay <= 30, (elapsed, delay)
        elapsed += delay
    assert 15 <= delays[-1] <= 30  # the last one repeats until the deadline
    assert config["POLL_TIMEOUT_SECONDS"] == 15 * 60
    assert config["KIE_WEBHOOK_HMAC_KEY"] is None
