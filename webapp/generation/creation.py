"""Create batches and single photos: price, charge once, write the rows and the inputs, then
ring the doorbell that starts them.

The doorbell is the queue's interface (tasks.Queue: `start_batch`, `start_photo`), passed in so
that this layer never imports the queue. It rings after the commit: if it fails, the rows are
there and the reaper starts the work.
"""

import logging
from typing import NamedTuple, Protocol

from sqlalchemy import func, select

from .. import billing
from ..extensions import db
from ..models import (
    Batch,
    Generation,
    GenerationStatus,
    LedgerKind,
    new_batch_id,
    new_generation_id,
)

log = logging.getLogger(__name__)


class TooManyInFlight(Exception):
    """The user has too many images waiting or running to add these."""

    def __init__(self, limit, in_flight):
        super().__init__(f"at most {limit} images in flight; {in_flight} already are")
        self.limit = limit
        self.in_flight = in_flight

    @property
    def message(self):
        """What a person reads, on the pages and in the API alike."""
        return (
            f"You have {self.in_flight} images waiting or running, and at most {self.limit} "
            "images may be at once: send more once some have finished."
        )


class Charge(NamedTuple):
    """One debit of a create, and the resource its ledger row (and idempotency key) names."""

    user_id: int
    amount: int
    kind: str
    resource: dict  # {"batch_id": …} or {"generation_id": …}


class Doorbell(Protocol):
    def start_batch(self, batch_id: str, concurrency: int, images: int) -> None: ...

    def start_photo(self, generation_id: str) -> None: ...


def create_batch(
    user_id,
    spec,
    storage,
    provider_name,
    doorbell,
    record_resource=None,
    parent_id=None,
    limits_in_flight=None,
):
    """Charge the batch's whole price once, create its rows and start its lanes; answer the
    committed Batch, its generations loaded as committed (status "queued").

    Raises billing.InsufficientCredits (nothing charged, no file kept) when the balance is short.
    `record_resource(batch_id=…)`, if given, runs inside the create's transaction (the API records
    the batch on its idempotency key there); whatever it raises undoes the whole create.
    `parent_id` names the batch this one retries (see retry.py). Raises TooManyInFlight when
    the user would have more than `limits_in_flight` images waiting or running (None: no cap).
    """
    cost = spec.total_cost
    _ensure_room(user_id, len(spec.images), limits_in_flight)
    _ensure_affordable(user_id, cost)
    batch_id = new_batch_id()
    generation = spec.generation
    rows = []
    for position, image in enumerate(spec.images):
        generation_id = new_generation_id()
        rows.append(
            Generation(
                id=generation_id,
                batch_id=batch_id,
                user_id=user_id,
                client_id=image.client_id,
                position=position,
                input_key=f"inputs/{batch_id}/{generation_id}.{image.extension}",
                cost=generation.price,
                **_generation_fields(generation, provider_name),
            )
        )
    batch = Batch(
        id=batch_id,
        user_id=user_id,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        model=generation.model.id,
        quality=generation.quality,
        aspect_ratio=generation.aspect_ratio,
        concurrency=spec.concurrency,
        provider=provider_name,
        total_cost=cost,
        parent_id=parent_id,
        callback_url=spec.callback_url,
        canary=spec.canary,
    )
    inputs = [(row.input_key, image.data) for row, image in zip(rows, spec.images, strict=True)]
    charge = Charge(user_id, cost, LedgerKind.BATCH_DEBIT, {"batch_id": batch_id})
    _commit_with_inputs(storage, inputs, [batch, *rows], charge, record_resource)
    # Loaded before the lanes start, so the answer shows the batch as it was created.
    images = len(batch.generations)
    doorbell.start_batch(batch_id, batch.concurrency, images)
    return batch


def create_photo(
    user_id, spec, storage, provider_name, doorbell, record_resource=None, limits_in_flight=None
):
    """Charge one image, create its generation (no batch) and start it; answer the committed
    Generation.

    `record_resource(generation_id=…)` is create_batch's hook, for the photo.
    """
    generation = spec.generation
    cost = generation.price
    _ensure_room(user_id, 1, limits_in_flight)
    _ensure_affordable(user_id, cost)
    generation_id = new_generation_id()
    row = Generation(
        id=generation_id,
        user_id=user_id,
        cost=cost,
        **_generation_fields(generation, provider_name),
    )
    inputs = []
    if spec.image is not None:
        row.input_key = f"inputs/photos/{generation_id}.{spec.image.extension}"
        inputs.append((row.input_key, spec.image.data))

    charge = Charge(user_id, cost, LedgerKind.PHOTO_DEBIT, {"generation_id": generation_id})
    _commit_with_inputs(storage, inputs, [row], charge, record_resource)
    doorbell.start_photo(generation_id)
    return row


def _generation_fields(generation, provider_name):
    return {
        "model": generation.model.id,
        "mode": generation.mode,
        "prompt": generation.prompt,
        "negative_prompt": generation.negative_prompt,
        "quality": generation.quality,
        "aspect_ratio": generation.aspect_ratio,
        "provider": provider_name,
    }


def _ensure_room(user_id, images, limit):
    """Refuse a create that would leave the user more than `limit` images in flight. A guard
    against one account flooding the queue, counted before the create (two creates at once
    may pass it together: it bounds, it does not meter)."""
    if limit is None:
        return
    in_flight = db.session.scalar(
        select(func.count()).where(
            Generation.user_id == user_id,
            Generation.status.in_((GenerationStatus.PENDING, GenerationStatus.PROCESSING)),
        )
    )
    db.session.rollback()
    if in_flight + images > limit:
        raise TooManyInFlight(limit, in_flight)


def _ensure_affordable(user_id, cost):
    """Refuse early, before any file is written; the conditional debit is the real guard.
    A read of its own, ended here."""
    available = billing.balance(user_id)
    db.session.rollback()
    if available is None or available < cost:
        raise billing.InsufficientCredits(cost, available or 0)


def _commit_with_inputs(storage, inputs, rows, charge, record_resource):
    """Store the inputs, then add the rows, debit the charge and record the resource, and
    commit; on any failure roll back and keep no file. The create's unit of work: the debit and
    the idempotency hook it calls neither commit nor roll back."""
    try:
        for key, data in inputs:
            storage.save(key, data)
        db.session.add_all(rows)
        db.session.flush()  # the ledger row refers to the new rows
        billing.debit(charge.user_id, charge.amount, charge.kind, **charge.resource)
        if record_resource:
            record_resource(**charge.resource)
        db.session.commit()
    except Exception:  # whatever stopped the create (a refused debit, the database, a hook…)
        db.session.rollback()
        for key, _ in inputs:
            try:
                storage.delete(key)
            except OSError:  # the storage is failing too; no row names the file, so it is inert
                log.warning("could not delete %s after a failed create", key, exc_info=True)
        raise
