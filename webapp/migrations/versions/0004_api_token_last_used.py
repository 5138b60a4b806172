"""When each API token was last used, for the lists that let a person revoke it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("api_tokens", sa.Column("last_used_at", sa.DateTime(), nullable=True))


def downgrade():
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
