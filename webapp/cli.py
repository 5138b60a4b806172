"""Operator commands: `flask --app app init-db | users create | credits grant | reap | serve`.

Flask-Migrate adds `flask --app app db …` (upgrade, migrate, current …) beside them.
"""

import os
import signal
import sys

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select
from werkzeug.serving import run_simple

from . import billing, schema
from .auth import create_token
from .extensions import db
from .models import User

users_cli = AppGroup("users", help="Manage users.")
credits_cli = AppGroup("credits", help="Manage credits (every change writes a ledger row).")


def _find_user(name):
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
def new_token(name):
    """Print a new API token for an existing user (the last line)."""
    user = _find_user(name)
    token = create_token(user.id)
    db.session.commit()
    click.echo(token)


@credits_cli.command("grant")
@click.argument("name")
@click.argument("amount", type=click.IntRange(min=1))
def grant_credits(name, amount):
    """Add credits to a user's balance."""
    user = _find_user(name)
    billing.grant(user.id, amount, note="granted by operator")
    db.session.commit()
    click.echo(f"{name} now has {billing.balance(user.id)} credits.")


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
def serve(host, port, workers):
    """Run the web server and an embedded Huey consumer in one process."""
    from tasks import EmbeddedConsumer, get_queue

    app = current_app._get_current_object()
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
    base = f"http://{host}:{port}"
    backend = "Redis" if app.config["REDIS_URL"] else "SQLite"
    click.echo(
        f"batchgen is running at {base} (engine: {app.config['GENERATION_BACKEND']}, "
        f"queue: {backend}, database: {db.engine.url.render_as_string(hide_password=True)})\n"
        "To log in, create a user in another terminal:\n"
        "  .venv/bin/flask --app app users create alice --credits 100\n"
        f"then sign in at {base}/login with the token it prints last, or send it to the API\n"
        "as 'Authorization: Bearer <token>' (see README.md). Press Ctrl+C to stop."
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        run_simple(host, port, app, threaded=True)
    finally:
        consumer.stop(graceful=True)


def init_app(app):
    app.cli.add_command(users_cli)
    app.cli.add_command(credits_cli)
    app.cli.add_command(init_db)
    app.cli.add_command(reap_once)
    app.cli.add_command(serve)
