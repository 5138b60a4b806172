"""A change of a batch's hold (a pause, a resume, a canary's hold, its approval) gives the
batch's pending images the batch's new version: their reasons say the hold, so an event stream
resumed past it sends them again (webapp/versions.py, HOLD_*).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 14:40:00
"""

import sqlalchemy as sa
from alembic import op

from webapp.versions import HOLD_DROP, hold_statements

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade():
    for statement in hold_statements(op.get_bind().dialect.name):
        op.execute(sa.DDL(statement))


def downgrade():
    for statement in HOLD_DROP[op.get_bind().dialect.name]:
        op.execute(statement)
