"""Fair shares: an index for a user's images in flight and those started within the pacer's
window, which every claim counts (generation/shares.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:00:00
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index(
        "ix_generations_user_status_started",
        "generations",
        ["user_id", "status", "started_at"],
    )


def downgrade():
    op.drop_index("ix_generations_user_status_started", table_name="generations")
