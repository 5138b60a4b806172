"""A batch's status holds `awaiting_approval` (17 characters): VARCHAR(16) → VARCHAR(32).

PostgreSQL refused the held status outright (value too long); SQLite does not enforce a
VARCHAR's length, and rebuilding `batches` there would fight the foreign keys, so only the
other databases are altered.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 07:35:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade():
    _status_type(sa.String(16), sa.String(32))


def downgrade():
    _status_type(sa.String(32), sa.String(16))


def _status_type(old, new):
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("batches", "status", existing_type=old, type_=new, existing_nullable=False)
