"""Operator commands: `flask --app app init-db | users create | users token | users tokens |
users revoke-token | users login-link | credits grant | reap | serve | kie balance | kie check`,
`webhooks …` (webhooks_cli.py), and `ledger audit | batches … | users list` (ops_cli.py).

Flask-Migrate adds `flask --app app db …` (upgrade, migrate, current …) beside them.
"""

import os
import signal
import sys

import click
from flask import current_app, url_for
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from . import billing, schema
from .auth import create_token, revoke_token, tokens_of
from .auth.login_links import LINK_LIFETIME, create_login_link
from .extensions import db
from .models import User
from .providers.kie.client import KieClient, Refused
from .serving import bind, forget_address, local_address, record_address, recorded_address

users_cli = AppGroup("users", help="Manage users.")
credits_cli = AppGroup("credits", help="Manage credits (every change writes a ledger row).")

# `make run` (`serve --demo`) signs this user in on a new database, with some credits to try.
DEMO_USER = "demo"
DEMO_CREDITS = 100
kie_cli = AppGroup("kie", help="Check the kie.ai account (KIE_API_KEY, KIE_API_BASE).")


def find_user(name):
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise click.ClickException(f"no user named {name!r}")
    return user


@users_cli.command("create")
@click.argument("name")
@click.option("--credits", "initial_credits", type=click.IntRange(min=0), default=0)
def create_user(name, initial_credits):
    """Create a user and print their API token (the last line)."""
    if db.session.scalar(select(User).where(User.name == name)):
        raise click.ClickException(f"a user named {name!r} already exists")
    user = User(name=name)
    db.session.add(user)
    db.session.flush()
    if initial_credits:
        billing.grant(user.id, initial_credits, note="initial credits")
    token = create_token(user.id)
    db.session.commit()
    click.echo(f"Created user {name} (id {user.id}) with {initial_credits} credits.")
    click.echo(
        "API token (shown once): sign in with it at /login, "
        "or send it as 'Authorization: Bearer <token>':"
    )
    click.echo(token)


@users_cli.command("token")
@click.argument("name")
@click.option("--label", default="cli", help="What the token is for, as the lists show it.")
def new_token(name, label):
    """Print a new API token for an existing user (the last line)."""
    user = find_user(name)
    token = create_token(user.id, label[:64])
    db.session.commit()
    click.echo(token)


@users_cli.command("tokens")
@click.argument("name")
def list_tokens(name):
    """List a user's API tokens: id, label, created, last used (never the tokens themselves)."""
    tokens = tokens_of(find_user(name).id)
    if not tokens:
        click.echo(f"{name} has no API token.")
    for token in tokens:
        used = _when(token.last_used_at) if token.last_used_at else "never used"
        click.echo(f"{token.id}\t{token.name}\tcreated {_when(token.created_at)}\t{used}")


@users_cli.command("revoke-token")
@click.argument("token_id", type=int)
def revoke(token_id):
    """Revoke an API token by its id (see `users tokens NAME`): it stops working at once."""
    if not revoke_token(token_id):
        raise click.ClickException(f"no API token with id {token_id}")
    click.echo(f"Revoked API token {token_id}.")


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M UTC")


@users_cli.command("login-link")
@click.argument("name")
def login_link(name):
    """Print a link that signs the user in once, within 15 minutes (the last line)."""
    user = find_user(name)
    token = create_login_link(user.id)
    db.session.commit()
    click.echo(f"A sign-in link for {name}; it works once, within {_lifetime()}:")
    click.echo(_login_url(token, _default_base_url()))


def _login_url(token, base_url):
    """The absolute URL of a login link, on `base_url` (which may carry a path prefix)."""
    with current_app.test_request_context(base_url=base_url):
        return url_for("auth.login_link", token=token, _external=True)


def _default_base_url():
    """Where people reach this server: the address the running `serve` recorded, else
    PUBLIC_BASE_URL, else `make run`'s local address on PORT."""
    return (
        recorded_address(current_app.instance_path)
        or current_app.config["PUBLIC_BASE_URL"]
        or local_address("127.0.0.1", os.environ.get("PORT", "5000"))
    )


def _lifetime():
    return f"{int(LINK_LIFETIME.total_seconds() // 60)} minutes"


@credits_cli.command("grant")
@click.argument("name")
@click.argument("amount", type=click.IntRange(min=1))
def grant_credits(name, amount):
    """Add credits to a user's balance."""
    user = find_user(name)
    billing.grant(user.id, amount, note="granted by operator")
    db.session.commit()
    click.echo(f"{name} now has {billing.balance(user.id)} credits.")


def _kie_client():
    config = current_app.config
    if not config.get("KIE_API_KEY"):
        raise click.ClickException("KIE_API_KEY is not set")
    return KieClient(
        config["KIE_API_KEY"],
        config["KIE_API_BASE"],
        config["KIE_UPLOAD_BASE"],
        timeout=(5, config["KIE_TIMEOUT_SECONDS"]),
    )


def _kie_trouble(refused):
    """What went wrong, for an operator: kie's own code and message when it sent them."""
    if refused.code is None:
        return refused.failed.message
    return f"kie.ai answered {refused.code}: {refused.upstream_message or refused.failed.message}"


@kie_cli.command("balance")
def kie_balance():
    """Print the kie.ai account's credit balance."""
    client = _kie_client()
    try:
        credits = client.balance()
    except Refused as refused:
        raise click.ClickException(_kie_trouble(refused)) from None
    finally:
        client.close()
    click.echo(f"{credits} credits on kie.ai ({client.api_base})")


@kie_cli.command("check")
def kie_check():
    """Validate KIE_API_KEY with a dry request that creates nothing, and show the balance."""
    client = _kie_client()
    try:
        client.verify_key()
        credits = client.balance()
    except Refused as refused:
        raise click.ClickException(_kie_trouble(refused)) from None
    finally:
        client.close()
    click.echo(f"kie.ai ({client.api_base}) accepted KIE_API_KEY; balance: {credits} credits.")
    if credits <= 0:
        click.echo("Warning: without credits kie.ai refuses new generations (402): top it up.")


@click.command("init-db")
@with_appcontext
def init_db():
    """Apply the schema migrations, adopting a database made before there were any."""
    click.echo(schema.upgrade_to_head().summary())


@click.command("reap")
@with_appcontext
def reap_once():
    """Run the reaper once: recover stalled work and re-ring it."""
    from tasks import get_queue

    report = get_queue(current_app).reap()
    click.echo(f"Reaper: {report.summary()}.")


@click.command("serve")
@with_appcontext
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, default=lambda: int(os.environ.get("PORT", "5000")))
@click.option("--workers", type=int, default=None, help="Consumer threads (EMBEDDED_WORKERS).")
@click.option(
    "--demo",
    is_flag=True,
    help=f"On a database without users, create {DEMO_USER!r} with {DEMO_CREDITS} credits; "
    "print a one-time sign-in link for it at every start.",
)
def serve(host, port, workers, demo):
    """Run the web server and an embedded Huey consumer in one process."""
    from tasks import EmbeddedConsumer, get_queue

    app = current_app._get_current_object()
    server = bind(host, port, app)  # a busy port fails here, before anything is printed
    queue = get_queue(app)
    consumer = EmbeddedConsumer(
        queue.huey,
        workers=workers or app.config["EMBEDDED_WORKERS"],
        worker_type="thread",
        periodic=True,
        max_delay=1.0,
        check_worker_health=False,
    )
    consumer.start()
    queue.reap()  # pick up whatever a previous run left behind
    base = app.config["PUBLIC_BASE_URL"] or local_address(host, server.server_port)
    backend = "Redis" if app.config["REDIS_URL"] else "SQLite"
    click.echo(
        f"batchgen is running at {base} (engine: {app.config['GENERATION_BACKEND']}, "
        f"queue: {backend}, database: {db.engine.url.render_as_string(hide_password=True)})"
    )
    click.echo(_demo_sign_in(base) if demo else _how_to_sign_in())
    click.echo("Press Ctrl+C to stop.")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    record_address(app.instance_path, base)
    try:
        server.serve_forever()  # Werkzeug's own, without run_simple's development banner
    finally:
        forget_address(app.instance_path)
        consumer.stop(graceful=True)


def _demo_sign_in(base_url):
    """Make the demo user on a new database (no users yet); say how to sign in as them."""
    user = db.session.scalar(select(User).where(User.name == DEMO_USER))
    created = False
    if user is None and db.session.scalar(select(User.id).limit(1)) is None:
        user = User(name=DEMO_USER)
        db.session.add(user)
        db.session.flush()
        billing.grant(user.id, DEMO_CREDITS, note="demo credits")
        created = True
    if user is None:
        db.session.rollback()
        return "This database has users but no demo user. " + _how_to_sign_in()
    token = create_login_link(user.id)
    db.session.commit()
    news = f"Created the user {DEMO_USER!r} with {DEMO_CREDITS}⭐. " if created else ""
    return (
        f"{news}Open this link to sign in as {DEMO_USER} (it works once, within {_lifetime()}; "
        "restarting prints a new one):\n"
        f"  {_login_url(token, base_url)}"
    )


def _how_to_sign_in():
    return (
        "To sign in, print a one-time link in another terminal:\n"
        "  .venv/bin/flask --app app users login-link NAME\n"
        "(make a user first with: .venv/bin/flask --app app users create NAME --credits 100;\n"
        "its last line is an API token for 'Authorization: Bearer <token>', see README.md)."
    )


def init_app(app):
    app.cli.add_command(users_cli)
    app.cli.add_command(credits_cli)
    app.cli.add_command(kie_cli)
    app.cli.add_command(webhooks_cli.webhooks_cli)
    app.cli.add_command(ops_cli.ledger_cli)
    app.cli.add_command(ops_cli.batches_cli)
    app.cli.add_command(init_db)
    app.cli.add_command(reap_once)
    app.cli.add_command(serve)


# Their commands use find_user; ops_cli also adds `users list` to users_cli.
from . import ops_cli, webhooks_cli  # noqa: E402
