"""The change counter: `batches.version` and `generations.version`, bumped by triggers with
every state change of a batch or its images (webapp/versions.py), and the index of "the images
of a batch changed since version v" (the ETags, the events route).

Existing rows start at version 1, as new ones do.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 08:30:00
"""

import sqlalchemy as sa
from alembic import op

from webapp.versions import DROP, create_statements

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade():
    for table in ("batches", "generations"):
        op.add_column(table, sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
    op.create_index("ix_generations_batch_version", "generations", ["batch_id", "version"])
    for statement in create_statements(op.get_bind().dialect.name):
        op.execute(sa.DDL(statement))


def downgrade():
    for statement in DROP[op.get_bind().dialect.name]:
        op.execute(statement)
    op.drop_index("ix_generations_batch_version", table_name="generations")
    # SQLite rebuilds a table to drop a column: with foreign keys off meanwhile, so the rows
    # that refer to it survive the swap (as in 0003 and 0005).
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        op.execute("PRAGMA foreign_keys=OFF")
    for table in ("generations", "batches"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("version")
    if sqlite:
        op.execute("PRAGMA foreign_keys=ON")
