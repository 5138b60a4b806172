"""Operator commands: users create prints a token, credits grant writes the ledger."""

from sqlalchemy import select

from tests.support import ApiClient
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
