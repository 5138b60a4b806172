"""Operator commands: users create prints a token, credits grant writes the ledger."""

from tests.support import ApiClient


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
