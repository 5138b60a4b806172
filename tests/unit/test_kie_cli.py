"""`flask --app app kie balance` and `kie check`, against kie.ai mocked with `responses`."""

import pytest
import requests

from tests.support import make_app
from tests.unit.kie_mocks import API, CREDIT, KEY, RECORD, UPLOAD


@pytest.fixture
def runner(tmp_path):
    app = make_app(tmp_path, KIE_API_KEY=KEY, KIE_API_BASE=API, KIE_UPLOAD_BASE=UPLOAD)
    return app.test_cli_runner()


def test_balance_prints_the_kie_credit_balance(runner, kie_mock):
    kie_mock.get(CREDIT, json={"code": 200, "msg": "success", "data": 1234})

    result = runner.invoke(args=["kie", "balance"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"1234 credits on kie.ai ({API})"
    assert kie_mock.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


def test_balance_with_a_rejected_key_fails_with_kies_message(runner, kie_mock):
    kie_mock.get(CREDIT, json={"code": 401, "msg": "You do not have access permissions"})

    result = runner.invoke(args=["kie", "balance"])

    assert result.exit_code != 0
    assert "kie.ai answered 401: You do not have access permissions" in result.output


@pytest.mark.parametrize(
    "probe",
    [
        {"json": {"code": 422, "msg": "recordInfo is null", "data": None}},
        {"json": {"code": 200, "msg": "success", "data": None}},
    ],
)
def test_check_accepts_the_key_with_a_dry_request_and_shows_the_balance(runner, kie_mock, probe):
    kie_mock.get(RECORD, **probe)
    kie_mock.get(CREDIT, json={"code": 200, "msg": "success", "data": 50})

    result = runner.invoke(args=["kie", "check"])

    assert result.exit_code == 0, result.output
    assert "accepted KIE_API_KEY; balance: 50 credits" in result.output
    probe_call, _ = kie_mock.calls
    assert probe_call.request.method == "GET"  # reads a task that cannot exist: creates nothing


def test_check_warns_when_the_account_is_empty(runner, kie_mock):
    kie_mock.get(RECORD, json={"code": 422, "msg": "recordInfo is null"})
    kie_mock.get(CREDIT, json={"code": 200, "msg": "success", "data": 0})

    result = runner.invoke(args=["kie", "check"])

    assert result.exit_code == 0
    assert "Warning" in result.output and "402" in result.output


def test_check_refuses_a_rejected_key(runner, kie_mock):
    kie_mock.get(RECORD, status=401, json={"code": 401, "msg": "Invalid API key"})

    result = runner.invoke(args=["kie", "check"])

    assert result.exit_code != 0
    assert "kie.ai answered 401: Invalid API key" in result.output


def test_check_says_when_kie_cannot_be_reached(runner, kie_mock):
    kie_mock.get(RECORD, body=requests.exceptions.ConnectionError("refused"))

    result = runner.invoke(args=["kie", "check"])

    assert result.exit_code != 0
    assert "could not be reached" in result.output


def test_kie_commands_need_an_api_key(tmp_path):
    result = make_app(tmp_path, KIE_API_KEY=None).test_cli_runner().invoke(args=["kie", "check"])

    assert result.exit_code != 0
    assert "KIE_API_KEY is not set" in result.output
