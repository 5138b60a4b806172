"""`flask --app app webhooks …`: set an endpoint (a secret printed once), rotate, show, remove."""

from standardwebhooks import Webhook

from tests.support import create_user
from webapp.extensions import db
from webapp.generation.webhook_endpoints import endpoint_of, signing_secrets


def test_set_prints_a_secret_once_then_keeps_it(app):
    user_id, _ = create_user(app)
    runner = app.test_cli_runner()
    app.config["WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"

    first = runner.invoke(
        args=["webhooks", "set", "alice", "http://127.0.0.1:9/hook", "--events",
              "generation.failed"]
    )
    assert first.exit_code == 0, first.output
    secret = first.output.strip().splitlines()[-1]
    Webhook(secret)  # a real whsec_ secret
    again = runner.invoke(args=["webhooks", "set", "alice", "http://127.0.0.1:9/other"])
    assert again.exit_code == 0 and "whsec_" not in again.output

    shown = runner.invoke(args=["webhooks", "show", "alice"]).output
    assert "http://127.0.0.1:9/other" in shown and "whsec_" not in shown
    with app.app_context():
        assert endpoint_of(user_id).secret == secret


def test_rotate_secret_keeps_the_old_one_signing(app):
    user_id, _ = create_user(app)
    runner = app.test_cli_runner()
    old = runner.invoke(args=["webhooks", "rotate-secret", "alice"]).output.split()[-1]
    new = runner.invoke(args=["webhooks", "rotate-secret", "alice"]).output.split()[-1]
    assert old != new
    with app.app_context():
        assert signing_secrets(endpoint_of(user_id)) == [new, old]


def test_set_refuses_a_private_address_and_an_unknown_event(app):
    create_user(app)
    runner = app.test_cli_runner()
    private = runner.invoke(args=["webhooks", "set", "alice", "http://192.168.1.5/hook"])
    assert private.exit_code != 0 and "private or reserved" in private.output
    app.config["WEBHOOK_ALLOW_HOSTS"] = "127.0.0.1"
    unknown = runner.invoke(
        args=["webhooks", "set", "alice", "http://127.0.0.1/", "--events", "batch.exploded"]
    )
    assert unknown.exit_code != 0 and "Unknown event type(s): batch.exploded" in unknown.output
    remove = runner.invoke(args=["webhooks", "remove", "nobody"])
    assert remove.exit_code != 0 and "no user named" in remove.output
    with app.app_context():
        assert db.session.execute(db.text("select count(*) from webhook_endpoints")).scalar() == 0
