"""One-time login links, Telegram display names, and retry batches linked to their parent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 03:38:04.371088
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "login_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_login_links_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_links")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_login_links_token_sha256")),
    )
    op.create_index(op.f("ix_login_links_user_id"), "login_links", ["user_id"], unique=False)

    op.add_column("users", sa.Column("display_name", sa.String(length=128), nullable=True))

    _add_parent_id()
    op.create_index(op.f("ix_batches_parent_id"), "batches", ["parent_id"], unique=True)


def downgrade():
    op.drop_index(op.f("ix_batches_parent_id"), table_name="batches")
    _drop_parent_id()
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("display_name")
    op.drop_index(op.f("ix_login_links_user_id"), table_name="login_links")
    op.drop_table("login_links")


def _add_parent_id():
    """SQLite cannot add a foreign key to a table, but it can add a column that carries one.

    Alembic's batch mode would rebuild `batches` instead, and dropping the old table fails
    while generations and ledger rows refer to it.
    """
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE batches ADD COLUMN parent_id VARCHAR(40) "
            "CONSTRAINT fk_batches_parent_id_batches REFERENCES batches (id)"
        )
        return
    op.add_column("batches", sa.Column("parent_id", sa.String(length=40), nullable=True))
    op.create_foreign_key(
        op.f("fk_batches_parent_id_batches"), "batches", "batches", ["parent_id"], ["id"]
    )


def _drop_parent_id():
    """SQLite cannot drop a column that carries a foreign key: batch mode rebuilds the table,
    with foreign keys off meanwhile so the rows that refer to batches survive the swap (the
    pragma works here because Alembic runs SQLite's DDL outside a transaction)."""
    if op.get_bind().dialect.name == "sqlite":
        op.execute("PRAGMA foreign_keys=OFF")
        with op.batch_alter_table("batches", schema=None) as batch_op:
            batch_op.drop_column("parent_id")
        op.execute("PRAGMA foreign_keys=ON")
        return
    op.drop_constraint(op.f("fk_batches_parent_id_batches"), "batches", type_="foreignkey")
    op.drop_column("batches", "parent_id")
