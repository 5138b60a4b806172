"""Queue control: a batch's canary (how many images run before it awaits approval), when it
began awaiting approval and when it was approved, and when it was paused.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 07:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("batches", sa.Column("canary", sa.Integer(), nullable=True))
    op.add_column("batches", sa.Column("awaiting_since", sa.DateTime(), nullable=True))
    op.add_column("batches", sa.Column("approved_at", sa.DateTime(), nullable=True))
    op.add_column("batches", sa.Column("paused_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("paused_at")
        batch.drop_column("approved_at")
        batch.drop_column("awaiting_since")
        batch.drop_column("canary")
