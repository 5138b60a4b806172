"""Database models: users, tokens, batches, generations and the credit ledger."""

import re
import secrets
import time
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db


def utcnow():
    """Naive UTC now: the one clock every row uses."""
    return datetime.now(UTC).replace(tzinfo=None)


# Every id we make (and an Idempotency-Key's row) fits this; anything else names no row.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def looks_like_id(value):
    """Whether `value` could be one of our ids; checked before a query, so text that could
    never match (a NUL, which PostgreSQL refuses outright) is simply not found."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def new_batch_id():
    return f"batch_{int(time.time() * 1000)}_{secrets.token_hex(4)}"


def new_generation_id():
    return f"gen_{secrets.token_hex(8)}"


class GenerationStatus:
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINAL = (SUCCESS, FAILED, CANCELLED)
    ALL = (PENDING, PROCESSING, SUCCESS, FAILED, CANCELLED)


class BatchStatus:
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Held: nothing new is claimed until the user answers (approve or reject a canary) or
    # resumes; images already running finish. Cancel still works, and the reaper leaves the
    # batch alone (a canary's approval deadline aside).
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    ACTIVE = (QUEUED, RUNNING)
    HELD = (AWAITING_APPROVAL, PAUSED)
    UNFINISHED = ACTIVE + HELD
    TERMINAL = (COMPLETED, PARTIAL, FAILED, CANCELLED)


class LedgerKind:
    BATCH_DEBIT = "batch_debit"
    PHOTO_DEBIT = "photo_debit"
    REFUND = "refund"
    GRANT = "grant"


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # Telegram's user ids outgrow 32 bits (SQLite's INTEGER holds 64 already).
    telegram_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), unique=True
    )
    # What Telegram calls the person (first and last name), refreshed at every Telegram sign-in;
    # `name` stays the stable handle operators type.
    display_name: Mapped[str | None] = mapped_column(String(128))
    credits: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def shown_name(self):
        return self.display_name or self.name


class ApiToken(db.Model):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="cli")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Refreshed at most every few minutes (auth.TOUCH_INTERVAL): a poll need not write.
    last_used_at: Mapped[datetime | None]

    user: Mapped[User] = relationship()


class LoginLink(db.Model):
    """A one-time sign-in link: only the token's SHA-256 is kept, and using it deletes the row."""

    __tablename__ = "login_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(db.Model):
    __tablename__ = "batches"
    # A user's history, newest first, a keyset page at a time (generation/history.py).
    __table_args__ = (Index("ix_batches_user_created", "user_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_batch_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(64))
    quality: Mapped[str] = mapped_column(String(16))
    aspect_ratio: Mapped[str] = mapped_column(String(16))
    concurrency: Mapped[int]
    provider: Mapped[str] = mapped_column(String(16))
    # Room for "awaiting_approval" (17 characters; migration 0009). SQLite enforces no length,
    # and its table keeps the 16 it was made with.
    status: Mapped[str] = mapped_column(
        String(32).with_variant(String(16), "sqlite"), default=BatchStatus.QUEUED, index=True
    )
    total_cost: Mapped[int]
    refunded: Mapped[int] = mapped_column(default=0)
    # The batch whose failed images this one retries. Unique: a batch is retried at most once,
    # so a double click cannot charge twice (a retry batch has its own retry).
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("batches.id"), index=True, unique=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Last time a lane claimed or finished a generation: the reaper's stall detector.
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Where this batch's own webhooks go (the POST's callbackUrl), beside the user's endpoint.
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    # Queue control: the first `canary` images run, then the batch awaits approval (since
    # `awaiting_since`); `approved_at` once the rest may run. `paused_at` while paused.
    canary: Mapped[int | None]
    awaiting_since: Mapped[datetime | None]
    approved_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    # The change counter, bumped by the database with every state change (webapp/versions.py).
    version: Mapped[int] = mapped_column(default=1, server_default="1")

    generations: Mapped[list["Generation"]] = relationship(
        back_populates="batch", order_by="Generation.position"
    )

    @property
    def is_finished(self):
        return self.status in BatchStatus.TERMINAL


class Generation(db.Model):
    __tablename__ = "generations"
    __table_args__ = (
        UniqueConstraint("batch_id", "client_id"),
        Index("ix_generations_batch_status", "batch_id", "status"),
        Index("ix_generations_status_lease", "status", "lease_expires_at"),
        # A user's images in flight, and those started within the pacer's window: the fair
        # share of each claim (generation/shares.py).
        Index("ix_generations_user_status_started", "user_id", "status", "started_at"),
        # A model's latest successes (the median of an ETA) and the images started within the
        # pacer's window (the places and the pacer's slots): generation/eta.py and places.py.
        Index("ix_generations_model_finished", "model", "finished_at"),
        Index("ix_generations_started", "started_at"),
        Index("ix_generations_batch_version", "batch_id", "version"),  # changed since v
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_generation_id)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    client_id: Mapped[str | None] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(default=0)
    model: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(8), default="i2i")
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    quality: Mapped[str] = mapped_column(String(16))
    aspect_ratio: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=GenerationStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(40))
    lease_expires_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    provider_task_id: Mapped[str | None] = mapped_column(String(128))
    input_key: Mapped[str | None] = mapped_column(String(255))
    result_key: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Retention (generation/retention.py): when the input and the result files were deleted.
    # The keys stay, so an old link to a deleted result can say it is gone (410).
    input_deleted_at: Mapped[datetime | None]
    result_deleted_at: Mapped[datetime | None]
    # The batch's version at this image's last change (its own count for a photo).
    version: Mapped[int] = mapped_column(default=1, server_default="1")

    batch: Mapped[Batch | None] = relationship(back_populates="generations")

    @property
    def is_finished(self):
        return self.status in GenerationStatus.TERMINAL


class LedgerEntry(db.Model):
    __tablename__ = "ledger"
    # A generation can be refunded once and only once: the database says no to a second.
    __table_args__ = (UniqueConstraint("generation_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    amount: Mapped[int]
    kind: Mapped[str] = mapped_column(String(16))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"))
    note: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdempotencyKey(db.Model):
    """One `Idempotency-Key` a user sent to a POST route, and what became of that request.

    In flight while `response_status` is NULL: `lock_token` names the request that owns the key
    (a takeover changes it, which fences out the old owner's writes). `batch_id` or
    `generation_id` is set in the create's own transaction, so a crash after that commit still
    knows the resource was created and paid for.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    key: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(64))  # "POST /api/generate/batch"
    request_sha256: Mapped[str] = mapped_column(String(64))  # of the raw request body
    lock_token: Mapped[str] = mapped_column(String(32))
    locked_at: Mapped[datetime | None]  # NULL: nobody is working on it any more
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"))
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"))
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class PacingBucket(db.Model):
    """The slots one upstream rate limit handed out lately, when there is no Redis (see pacing)."""

    __tablename__ = "pacing_buckets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Microseconds since the epoch (UTC) of the slots taken in the last period: at most `limit`.
    taken: Mapped[list[int]] = mapped_column(JSON, default=list)


class DeliveryStatus:
    PENDING = "pending"  # to be sent, now or at next_attempt_at
    DELIVERED = "delivered"
    FAILED = "failed"  # every attempt of its schedule spent, or the endpoint said 410 Gone


class WebhookEndpoint(db.Model):
    """A user's webhook settings: the signing secret (and the one it replaced, which signs too
    until `previous_secret_expires_at`), and the default endpoint every batch announces to.

    Secrets are kept as they are: signing needs them (see docs/webhooks.md)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), unique=True)
    url: Mapped[str | None] = mapped_column(String(2048))  # None: a secret for callbackUrl only
    # Event types sent beyond the batch.* ones that always are: "generation.succeeded", ...
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(String(128))
    previous_secret: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]  # set when the endpoint answered 410 Gone
    disabled_reason: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def new_delivery_id():
    return f"msg_{secrets.token_hex(12)}"


class WebhookDelivery(db.Model):
    """One event for one URL: the outbox row, written in the transaction of the change it
    announces. Its id is the `webhook-id` of every attempt to send it."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_delivery_id)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_endpoints.id"))
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True)
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"))
    event_type: Mapped[str] = mapped_column(String(32))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)  # the exact body every attempt sends
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    # The place in the retry schedule: a redelivery starts it over.
    schedule_index: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    lease_expires_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(db.Model):
    """One try at sending a delivery: when, what came back (at most 1 KB of it), how long."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    status_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(255))
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(default=0)
