"""Retry a finished batch's failed images: a new batch of just those, linked to its parent.

The new batch goes through create_batch like any other (same checks, one charge for the images
it holds); its inputs are copies of the parent's, read back from storage.
"""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import Batch, GenerationStatus
from .creation import create_batch
from .validation import BatchSpec, ValidationError, check_image, parse_upload_settings


class NothingToRetry(Exception):
    """The batch cannot be retried now; the message says why, for a person."""


class AlreadyRetried(Exception):
    """The batch was retried before (at most once: its retry has a retry button of its own)."""

    def __init__(self, retry_id):
        super().__init__(f"already retried as {retry_id}")
        self.retry_id = retry_id


def retry_of(batch_id):
    """The id of the batch that retries `batch_id`, or None."""
    return db.session.scalar(select(Batch.id).where(Batch.parent_id == batch_id))


def retry_failed(
    batch,
    storage,
    provider_name,
    catalog,
    limits,
    doorbell,
    limits_in_flight=None,
    prompts=None,
):
    """Create, charge, start and answer the batch that retries `batch`'s failed images.

    `prompts` ({"prompt", "negativePrompt"}) retries them with other words (after a refusal
    under the content policy the same ones would be refused again); checked as any prompt is.

    Raises NothingToRetry, AlreadyRetried, ValidationError (the model or its settings are no
    longer offered), billing.InsufficientCredits or TooManyInFlight; none of them charges
    anything.
    """
    existing = retry_of(batch.id)
    if existing:
        raise AlreadyRetried(existing)
    if not batch.is_finished or not all(row.is_finished for row in batch.generations):
        # A cancelled batch is finished while its running images still are not.
        raise NothingToRetry("The batch is still running: retry its failed images once it ends.")
    failed = [row for row in batch.generations if row.status == GenerationStatus.FAILED]
    if not failed:
        raise NothingToRetry("No image of this batch failed: there is nothing to retry.")
    settings = {
        "prompt": batch.prompt,
        "negativePrompt": batch.negative_prompt,
        "model": batch.model,
        "quality": batch.quality,
        "aspectRatio": batch.aspect_ratio,
        **(prompts or {}),
    }
    spec = BatchSpec(
        generation=parse_upload_settings(settings, catalog),
        concurrency=batch.concurrency,
        images=tuple(_stored_input(row, storage, limits) for row in failed),
        callback_url=batch.callback_url,
    )
    try:
        return create_batch(
            batch.user_id,
            spec,
            storage,
            provider_name,
            doorbell,
            parent_id=batch.id,
            limits_in_flight=limits_in_flight,
        )
    except IntegrityError:
        # Two retries at once: the unique parent_id let only the other one in.
        existing = retry_of(batch.id)
        if existing is None:
            raise
        raise AlreadyRetried(existing) from None


def _stored_input(generation, storage, limits):
    name = generation.client_id or generation.id
    try:
        raw = storage.read(generation.input_key)
    except (FileNotFoundError, ValueError, TypeError):
        raise NothingToRetry(f"The input of {name} is no longer stored.") from None
    try:
        return check_image(raw, name, limits, generation.client_id)
    except ValidationError as error:
        raise NothingToRetry(error.message) from None
