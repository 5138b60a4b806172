"""Operator commands for running the service: `flask --app app ledger audit`, `batches list |
show | cancel | requeue`, and `users list` (beside cli.py's other `users` commands).

They read and change what the web pages and the API do, through the same services: a cancel is
`generation.cancellation.cancel_batch` (its refunds happen once, however often it is run), a
requeue only rings the queue (the database decides what a lane may claim, so ringing twice
claims nothing twice). See docs/operations.md.
"""

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from .billing.audit import audit
from .cli import find_user, users_cli
from .extensions import db
from .generation.cancellation import NothingToCancel, cancel_batch
from .generation.progress import Progress, tallies
from .models import Batch, BatchStatus, Generation, GenerationStatus, User, looks_like_id

ledger_cli = AppGroup("ledger", help="Check the credit ledger.")
batches_cli = AppGroup("batches", help="Look at, cancel and requeue batches.")

BATCH_STATUSES = BatchStatus.UNFINISHED + BatchStatus.TERMINAL
IN_FLIGHT = (GenerationStatus.PENDING, GenerationStatus.PROCESSING)


@ledger_cli.command("audit")
def ledger_audit():
    """Check every balance against the ledger, one debit per batch, at most one refund per
    image and only for failed or cancelled ones. Exits 1 and lists each offender if any."""
    report = audit()
    for finding in report.findings:
        click.echo(str(finding))
    click.echo(report.summary())
    if not report.ok:
        raise SystemExit(1)


@batches_cli.command("list")
@click.option("--user", "user_name", help="Only this user's batches.")
@click.option("--status", type=click.Choice(BATCH_STATUSES), help="Only batches in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
def list_batches(user_name, status, limit):
    """The newest batches: id, user, status, images done of all, cost, created."""
    query = select(Batch, User.name).join(User, User.id == Batch.user_id)
    if user_name:
        query = query.where(Batch.user_id == find_user(user_name).id)
    if status:
        query = query.where(Batch.status == status)
    rows = db.session.execute(
        query.order_by(Batch.created_at.desc(), Batch.id.desc()).limit(limit)
    ).all()
    if not rows:
        click.echo("No batch matches.")
        return
    counts = tallies([batch.id for batch, _ in rows])
    for batch, name in rows:
        progress = Progress.from_tallies(counts.get(batch.id, {}))
        click.echo(
            "\t".join(
                (
                    batch.id,
                    name,
                    batch.status,
                    f"{progress.finished}/{progress.total} done{_outcomes(progress)}",
                    f"{batch.total_cost}⭐ (refunded {batch.refunded})",
                    _when(batch.created_at),
                )
            )
        )


def _outcomes(progress):
    parts = [f"{n} {word}" for n, word in ((progress.failed, "failed"),
                                           (progress.cancelled, "cancelled")) if n]
    return f" ({', '.join(parts)})" if parts else ""


@batches_cli.command("show")
@click.argument("batch_id")
def show_batch(batch_id):
    """A batch and each of its images: status, attempts, upstream task, error."""
    batch = _batch(batch_id)
    owner = db.session.get(User, batch.user_id)
    progress = Progress.of(batch.generations)
    fields = [
        ("batch", batch.id),
        ("user", f"{owner.name} (id {owner.id})"),
        ("status", batch.status),
        ("model", f"{batch.model}, {batch.quality}, {batch.aspect_ratio}, "
                  f"concurrency {batch.concurrency}, engine {batch.provider}"),
        ("prompt", batch.prompt),
        ("cost", f"{batch.total_cost}⭐, refunded {batch.refunded}⭐"),
        ("images", f"{progress.total}: {progress.pending} pending, {progress.processing} "
                   f"processing, {progress.success} success, {progress.failed} failed, "
                   f"{progress.cancelled} cancelled"),
        ("created", _when(batch.created_at)),
        ("started", _when(batch.started_at)),
        ("finished", _when(batch.finished_at)),
    ]
    if batch.parent_id:
        fields.append(("retries", batch.parent_id))
    for name, value in fields:
        click.echo(f"{name}\t{value}")
    click.echo("")
    click.echo("#\tgeneration\tstatus\tattempts\tupstream task\terror")
    for row in batch.generations:
        error = f"{row.error_code}: {row.error_message}" if row.error_code else ""
        click.echo(
            f"{row.position}\t{row.id}\t{row.status}\t{row.attempts}\t"
            f"{row.provider_task_id or ''}\t{error}"
        )
    db.session.rollback()


@batches_cli.command("cancel")
@click.argument("batch_id")
def cancel(batch_id):
    """Cancel a batch as its owner would: waiting images are refunded once, running ones end."""
    _batch(batch_id)
    db.session.rollback()
    try:
        outcome = cancel_batch(batch_id)
    except NothingToCancel as finished:
        raise click.ClickException(
            f"batch {batch_id} is already {finished.status}: there is nothing to cancel"
        ) from None
    click.echo(f"{batch_id}: {outcome.message}")


@batches_cli.command("requeue")
@click.argument("batch_id")
def requeue(batch_id):
    """Ring an unfinished batch's lanes again (after a queue outage, say). Safe to repeat: a
    lane claims only what the database lets it, so extra rings find nothing and stop."""
    from tasks import get_queue

    batch = _batch(batch_id)
    status, concurrency = batch.status, batch.concurrency
    progress = Progress.from_tallies(tallies([batch_id]).get(batch_id, {}))
    db.session.rollback()
    if status in BatchStatus.TERMINAL or not progress.remaining:
        click.echo(f"{batch_id} is {status} with no image left to run: nothing to requeue.")
        return
    lanes = min(concurrency, progress.remaining)
    queue = get_queue(current_app)
    try:
        for _ in range(lanes):
            queue.run_lane(batch_id)
    except Exception as error:  # the queue's backend (Redis) is down: say so, exit 1
        raise click.ClickException(f"the queue cannot be reached: {error}") from None
    held = " (held: its lanes claim nothing until it is resumed or approved)"
    click.echo(
        f"Rang {lanes} lane(s) of {batch_id} ({status}, {progress.pending} pending, "
        f"{progress.processing} processing){held if status in BatchStatus.HELD else ''}."
    )


@users_cli.command("list")
def list_users():
    """Every user: id, name, credits, batches, images waiting or running, created."""
    batches = dict(
        db.session.execute(select(Batch.user_id, func.count()).group_by(Batch.user_id)).all()
    )
    in_flight = dict(
        db.session.execute(
            select(Generation.user_id, func.count())
            .where(Generation.status.in_(IN_FLIGHT))
            .group_by(Generation.user_id)
        ).all()
    )
    users = db.session.scalars(select(User).order_by(User.id)).all()
    db.session.rollback()
    if not users:
        click.echo("No users yet.")
        return
    click.echo("id\tname\tcredits\tbatches\tin flight\tcreated")
    for user in users:
        click.echo(
            f"{user.id}\t{user.name}\t{user.credits}\t{batches.get(user.id, 0)}\t"
            f"{in_flight.get(user.id, 0)}\t{_when(user.created_at)}"
        )


def _batch(batch_id):
    batch = db.session.get(Batch, batch_id) if looks_like_id(batch_id) else None
    if batch is None:
        raise click.ClickException(f"no batch with id {batch_id!r}")
    return batch


def _when(moment):
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "-"
