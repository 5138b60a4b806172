"""Operator commands: users create prints a token, credits grant writes the ledger; the links
that login-link prints are on the running server's address."""

import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from tests.support import ApiClient, make_app
from webapp.extensions import db
from webapp.models import User


def test_users_create_prints_a_working_token_last(app):
    result = app.test_cli_runner().invoke(args=["users", "create", "alice", "--credits", "100"])

    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    client = ApiClient(app, None, token)
    me = client.get("/api/me").get_json()
    assert me["name"] == "alice" and me["credits"] == 100


def test_users_create_refuses_a_duplicate_name(app):
    runner = app.test_cli_runner()
    runner.invoke(args=["users", "create", "alice"])

    result = runner.invoke(args=["users", "create", "alice"])

    assert result.exit_code != 0
    assert "already exists" in result.output


def test_credits_grant_adds_credits_with_a_ledger_row(app):
    runner = app.test_cli_runner()
    token = runner.invoke(args=["users", "create", "alice", "--credits", "10"]).output.split()[-1]

    result = runner.invoke(args=["credits", "grant", "alice", "50"])

    assert result.exit_code == 0, result.output
    client = ApiClient(app, 1, token)
    assert client.get("/api/me").get_json()["credits"] == 60
    assert client.ledger() == [("grant", 10), ("grant", 50)]


def test_credits_grant_to_an_unknown_user_fails_cleanly(app):
    result = app.test_cli_runner().invoke(args=["credits", "grant", "nobody", "5"])

    assert result.exit_code != 0
    assert "no user named" in result.output


def test_reap_command_runs_once(app):
    result = app.test_cli_runner().invoke(args=["reap"])

    assert result.exit_code == 0
    assert result.output.startswith("Reaper:")


def test_make_runs_demo_user_is_created_once_on_a_new_database_with_a_link_each_start(app):
    from webapp import cli

    with app.app_context():
        first = cli._demo_sign_in("http://127.0.0.1:5000")
        second = cli._demo_sign_in("http://127.0.0.1:5000")

    assert first.startswith("Created the user 'demo' with 100⭐.")
    assert not second.startswith("Created")
    links = [text.splitlines()[-1].strip() for text in (first, second)]
    assert all(link.startswith("http://127.0.0.1:5000/auth/link/") for link in links)
    assert links[0] != links[1]
    assert app.test_client().get(links[1]).status_code == 200  # still unused


def test_make_run_adds_no_demo_user_to_a_database_that_has_users(app):
    from webapp import cli

    app.test_cli_runner().invoke(args=["users", "create", "alice"])
    with app.app_context():
        said = cli._demo_sign_in("http://127.0.0.1:5000")
        names = [user.name for user in db.session.scalars(select(User))]

    assert "has users but no demo user" in said and "users login-link NAME" in said
    assert names == ["alice"]


def _login_link_printed(app, **environment):
    result = app.test_cli_runner().invoke(args=["users", "login-link", "alice"], env=environment)
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def test_login_links_are_on_the_address_the_running_server_recorded(app):
    """`make run` writes instance/server.json; the CLI's links follow it, before PORT."""
    from webapp import serving

    app.test_cli_runner().invoke(args=["users", "create", "alice"])
    serving.record_address(app.instance_path, "http://127.0.0.1:7150")  # this process: alive

    link = _login_link_printed(app, PORT="7999")

    assert link.startswith("http://127.0.0.1:7150/auth/link/")
    assert app.test_client().get(link.removeprefix("http://127.0.0.1:7150")).status_code == 200


def test_a_record_left_by_a_server_that_is_gone_is_dropped(app, tmp_path):
    from webapp import serving

    app.test_cli_runner().invoke(args=["users", "create", "alice"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = Path(app.instance_path, serving.RECORD)
    record.write_text(json.dumps({"url": "http://127.0.0.1:7150", "pid": gone.pid}))

    link = _login_link_printed(app, PORT="7151")

    assert link.startswith("http://127.0.0.1:7151/auth/link/")
    assert not record.exists()


def test_without_a_running_server_public_base_url_comes_before_port(tmp_path):
    app = make_app(tmp_path, PUBLIC_BASE_URL="https://images.example/batchgen")
    app.test_cli_runner().invoke(args=["users", "create", "alice"])

    assert _login_link_printed(app, PORT="7151").startswith(
        "https://images.example/batchgen/auth/link/"
    )


def test_a_clean_stop_forgets_only_its_own_record(tmp_path):
    from webapp import serving

    serving.record_address(tmp_path, "http://127.0.0.1:7150")
    record = tmp_path / serving.RECORD
    mine = json.loads(record.read_text())
    record.write_text(json.dumps({**mine, "pid": mine["pid"] + 1}))  # a later server's
    serving.forget_address(tmp_path)
    assert record.exists()

    serving.record_address(tmp_path, "http://127.0.0.1:7150")
    serving.forget_address(tmp_path)
    assert not record.exists()
