"""The state families, read from the database and the queue when /metrics is scraped.

Counted, not remembered: every web process answers the same numbers, exact and unchanged by a
restart (aggregate them across instances with max(), not sum()). They are read through the
probes' timed connections (webapp/probes.py), so a part that is down costs a scrape at most
READY_TIMEOUT_SECONDS; its families are then left out and `batchgen_metrics_source_up` says 0.
"""

import logging
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select

from .. import probes
from ..models import (
    Batch,
    BatchStatus,
    DeliveryStatus,
    Generation,
    GenerationStatus,
    LedgerEntry,
    LedgerKind,
    WebhookDelivery,
)

log = logging.getLogger(__name__)

# The queued tasks looked at to count lanes; the depth itself is always exact.
QUEUE_SAMPLE = 10_000
LANE_TASK = "tasks.run_lane"
DEBITS = (LedgerKind.BATCH_DEBIT, LedgerKind.PHOTO_DEBIT)
DELIVERY_STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


class StateCollector:
    """A prometheus-client collector of one app's database and queue, read at each scrape."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        up = GaugeMetricFamily(
            "batchgen_metrics_source_up",
            "Whether this scrape could read the state families' source (1) or not (0).",
            labels=["source"],
        )
        for source, read in (("database", self._database), ("queue", self._queue)):
            try:
                families = list(read())
            except Exception as error:  # an outage: leave the families out, and say so
                log.warning("metrics: cannot read the %s: %s", source, type(error).__name__)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    def _database(self):
        with probes.database_connection(self.app) as connection:
            generations = connection.execute(
                select(Generation.status, Generation.model, func.count()).group_by(
                    Generation.status, Generation.model
                )
            ).all()
            batches = dict(
                connection.execute(select(Batch.status, func.count()).group_by(Batch.status)).all()
            )
            total = func.coalesce(func.sum(LedgerEntry.amount), 0)
            ledger = connection.execute(
                select(LedgerEntry.kind, func.count(), total).group_by(LedgerEntry.kind)
            ).all()
            deliveries = dict(
                connection.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                ).all()
            )
        yield from _generations(generations)
        by_status = GaugeMetricFamily("batchgen_batches", "Batches, by status.", labels=["status"])
        for status in (*BatchStatus.UNFINISHED, *BatchStatus.TERMINAL):
            by_status.add_metric([status], batches.get(status, 0))
        yield by_status
        yield from _ledger(ledger)
        webhooks = GaugeMetricFamily(
            "batchgen_webhook_deliveries",
            "Webhook deliveries, by outcome so far: pending (on its way or to be retried), "
            "delivered, failed (ended undelivered).",
            labels=["status"],
        )
        for status in DELIVERY_STATUSES:
            webhooks.add_metric([status], deliveries.get(status, 0))
        yield webhooks

    def _queue(self):
        storage = probes.queue_storage(self.app)
        depth = storage.queue_size()
        scheduled = storage.schedule_size()
        huey = storage_huey(self.app)
        lanes = 0
        for item in storage.enqueued_items(QUEUE_SAMPLE):
            try:
                lanes += huey.serializer.deserialize(item).name == LANE_TASK
            except Exception:  # a task another version wrote: not ours to count
                continue
        yield GaugeMetricFamily(
            "batchgen_queue_depth", "Tasks waiting in the queue to run now.", value=depth
        )
        yield GaugeMetricFamily(
            "batchgen_queue_scheduled",
            "Tasks scheduled to run later (polls, retries, lanes waiting for the pacer).",
            value=scheduled,
        )
        yield GaugeMetricFamily(
            "batchgen_queued_lanes",
            f"Batch lanes (run_lane tasks) waiting in the queue, among its first {QUEUE_SAMPLE}.",
            value=lanes,
        )


def storage_huey(app):
    import tasks

    return tasks.get_queue(app).huey


def _generations(rows):
    """Generations by status and model (each status of each model seen, zeros too), and the
    images in flight (processing: claimed, being made or polled upstream)."""
    counts = {(status, model): count for status, model, count in rows}
    models = sorted({model for _, model in counts})
    family = GaugeMetricFamily(
        "batchgen_generations",
        "Generations (images), by status and model.",
        labels=["status", "model"],
    )
    for model in models:
        for status in GenerationStatus.ALL:
            family.add_metric([status, model], counts.get((status, model), 0))
    yield family
    in_flight = sum(n for (status, _), n in counts.items() if status == GenerationStatus.PROCESSING)
    yield GaugeMetricFamily(
        "batchgen_images_in_flight",
        "Images being made now (generations processing).",
        value=in_flight,
    )


def _ledger(rows):
    """Money, from the ledger: credits charged (debits), refunded, and the refunds' number."""
    entries, amounts = Counter(), Counter()
    for kind, count, amount in rows:
        entries[kind] += count
        amounts[kind] += amount
    charged = -sum(amounts[kind] for kind in DEBITS)
    yield CounterMetricFamily(
        "batchgen_credits_charged",
        "Credits charged for batches and photos (debits in the ledger), before refunds.",
        value=charged,
    )
    yield CounterMetricFamily(
        "batchgen_credits_refunded",
        "Credits given back for images that did not succeed (refunds in the ledger).",
        value=amounts[LedgerKind.REFUND],
    )
    yield CounterMetricFamily(
        "batchgen_refunds",
        "Refunds in the ledger (one per image refunded).",
        value=entries[LedgerKind.REFUND],
    )
    yield CounterMetricFamily(
        "batchgen_credits_granted",
        "Credits granted to users (grants in the ledger).",
        value=amounts[LedgerKind.GRANT],
    )
