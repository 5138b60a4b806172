"""Operator commands for a user's webhooks: `flask --app app webhooks set | rotate-secret |
show | remove` (docs/webhooks.md). A new secret is printed once, on the last line."""

import click
from flask.cli import AppGroup

from .cli import find_user as _user
from .generation import webhook_endpoints

webhooks_cli = AppGroup("webhooks", help="Manage a user's webhook endpoint and signing secret.")


@webhooks_cli.command("set")
@click.argument("name")
@click.argument("url")
@click.option(
    "--events",
    default="",
    help="Comma-separated extra events: generation.succeeded,generation.failed "
    "(batch.* events are always sent).",
)
def set_endpoint(name, url, events):
    """Send NAME's batch events (and --events) to URL, signed; prints a new secret once."""
    user = _user(name)
    try:
        outcome = webhook_endpoints.set_endpoint(user.id, url, events.split(","))
    except webhook_endpoints.EndpointRefused as refused:
        raise click.ClickException(refused.message) from None
    extra = ", ".join(outcome.endpoint.events) or "none"
    click.echo(f"{name}'s webhooks go to {url} (batch events, and extra events: {extra}).")
    if outcome.new_secret:
        click.echo("Signing secret (shown once; verify deliveries with it):")
        click.echo(outcome.new_secret)
    else:
        click.echo("The signing secret is unchanged (rotate-secret makes a new one).")


@webhooks_cli.command("rotate-secret")
@click.argument("name")
def rotate_secret(name):
    """A new signing secret for NAME; the old one also signs for 24 hours. Printed once."""
    user = _user(name)
    secret = webhook_endpoints.rotate_secret(user.id)
    click.echo(
        f"New signing secret for {name}; the previous one signs too for "
        f"{webhook_endpoints.ROTATION_HOURS} hours (shown once):"
    )
    click.echo(secret)


@webhooks_cli.command("show")
@click.argument("name")
def show(name):
    """NAME's endpoint, its events and whether it is enabled (never the secret)."""
    endpoint = webhook_endpoints.endpoint_of(_user(name).id)
    if endpoint is None:
        click.echo(f"{name} has no webhooks set.")
        return
    click.echo(f"url\t{endpoint.url or '(none: a signing secret for callbackUrl only)'}")
    click.echo(f"events\tbatch.*{''.join(', ' + event for event in endpoint.events)}")
    state = f"disabled: {endpoint.disabled_reason}" if endpoint.disabled_at else "enabled"
    click.echo(f"state\t{state}")


@webhooks_cli.command("remove")
@click.argument("name")
def remove(name):
    """Stop sending NAME's events to the endpoint (the secret stays, for callbackUrl)."""
    webhook_endpoints.remove_endpoint_url(_user(name).id)
    click.echo(f"{name}'s default endpoint is removed.")
