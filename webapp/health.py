"""Health: `GET /healthz` (the process answers), `GET /readyz` (its database, queue and storage
answer within READY_TIMEOUT_SECONDS) and `flask --app app check`, which prints the same.

For load balancers and orchestrators: no sign-in, no rate limit, no CSRF, no session and no
cookie, and /healthz touches nothing but the process. /readyz answers 200 with each part's state,
or 503 naming the parts that failed, with an `error`. Its answer names a failure's kind only (an
exception's class, or a timeout); the whole message goes to the log and to `flask check`, so the
open probe discloses no host names or paths. The checks themselves are in probes.py.
"""

import json
import logging

import click
from flask import Blueprint, current_app, jsonify
from flask.cli import with_appcontext

from . import probes

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


def readiness(app):
    """(ready, {part: Checked}) of the app's parts, checked at once within the timeout."""
    checked = probes.run_checks(app)
    for part in checked.values():
        if not part.ok:
            log.warning("not ready: %s: %s (%.3f s)", part.part, part.detail, part.seconds)
    return all(part.ok for part in checked.values()), checked


def document(ready, checked):
    """/readyz's JSON answer (the CLI's --json)."""
    parts = {}
    for name, part in checked.items():
        entry = {"status": "ok" if part.ok else "failed", "seconds": part.seconds}
        if part.backend:
            entry["backend"] = part.backend
        if not part.ok:
            entry["error"] = part.error
        parts[name] = entry
    if ready:
        return {"status": "ready", "checks": parts}
    failed = [name for name, part in checked.items() if not part.ok]
    return {
        "status": "unavailable",
        "error": "Not ready: " + ", ".join(f"{name} ({checked[name].error})" for name in failed),
        "failed": failed,
        "checks": parts,
    }


def _uncached(response):
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/healthz")
def healthz():
    """The process is up and answers; nothing else is asked."""
    return _uncached(jsonify(status="ok"))


@bp.get("/readyz")
def readyz():
    ready, checked = readiness(current_app._get_current_object())
    response = jsonify(document(ready, checked))
    response.status_code = 200 if ready else 503
    return _uncached(response)


@click.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print /readyz's JSON document instead.")
@with_appcontext
def check_command(as_json):
    """Check the database, the queue and the storage as /readyz does; exit 1 if one fails."""
    ready, checked = readiness(current_app._get_current_object())
    if as_json:
        click.echo(json.dumps(document(ready, checked), indent=2))
    else:
        for part in checked.values():
            state = "ok" if part.ok else "FAILED"
            backend = f" ({part.backend})" if part.backend else ""
            line = f"{part.part + backend:<18} {state:<6} {part.seconds:7.3f} s"
            click.echo(line + ("" if part.ok else f"  {part.detail}"))
        failed = [part.part for part in checked.values() if not part.ok]
        click.echo("ready" if ready else "not ready: " + ", ".join(failed))
    if not ready:
        raise SystemExit(1)


def init_app(app):
    from .extensions import csrf

    app.register_blueprint(bp)
    csrf.exempt(bp)
    app.cli.add_command(check_command)
