"""Idempotency keys, the upstream pacer's buckets, and 64-bit Telegram user ids.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 03:16:06.470390
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "pacing_buckets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("taken", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_pacing_buckets")),
    )
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("lock_token", sa.String(length=32), nullable=False),
        sa.Column("locked_at", sa.DateTime(), nullable=True),
        sa.Column("batch_id", sa.String(length=40), nullable=True),
        sa.Column("generation_id", sa.String(length=40), nullable=True),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_idempotency_keys_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["generation_id"],
            ["generations.id"],
            name=op.f("fk_idempotency_keys_generation_id_generations"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_idempotency_keys_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("user_id", "key", name=op.f("uq_idempotency_keys_user_id_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )

    _telegram_id_type(sa.Integer(), sa.BigInteger())


def downgrade():
    _telegram_id_type(sa.BigInteger(), sa.Integer())
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")
    op.drop_table("pacing_buckets")


def _telegram_id_type(old, new):
    """PostgreSQL's integer is 32 bits; SQLite stores any integer in up to 64 bits already, and
    rebuilding `users` there (SQLite cannot alter a column) would fight the foreign keys."""
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "users", "telegram_id", existing_type=old, type_=new, existing_nullable=True
        )
