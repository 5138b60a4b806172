"""The database schema: bring it to the newest migration (webapp/migrations), whatever it was.

Databases made before there were migrations (`init-db` used to call `db.create_all()`) have the
tables of revision 0001 but no alembic_version table. They are adopted: stamped at 0001, which
is exactly what they hold, then upgraded like any other.
"""

from dataclasses import dataclass

from alembic import command
from alembic.runtime.migration import MigrationContext
from flask import current_app
from sqlalchemy import inspect

from .extensions import db

BASELINE_REVISION = "0001"
# What create_all() made before migrations: the tables of revision 0001.
BASELINE_TABLES = frozenset({"users", "api_tokens", "batches", "generations", "ledger"})


@dataclass(frozen=True)
class UpgradeReport:
    before: str | None  # the revision found (after adoption); None: an empty database
    after: str
    adopted: bool

    def summary(self):
        lines = []
        if self.adopted:
            lines.append(
                "Found tables made before migrations existed: "
                f"stamped them as revision {BASELINE_REVISION}."
            )
        if self.before == self.after:
            lines.append(f"Database at revision {self.after}, the newest: nothing to upgrade.")
        else:
            lines.append(
                f"Upgraded the database from {self.before or 'empty'} to revision {self.after}."
            )
        return "\n".join(lines)


def current_revision():
    """The revision the database is at; None when it has none."""
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head():
    """Apply every migration the database lacks, adopting a create_all() database first."""
    config = current_app.extensions["migrate"].migrate.get_config()
    adopted = _made_by_create_all()
    if adopted:
        command.stamp(config, BASELINE_REVISION)
    before = current_revision()
    command.upgrade(config, "head")
    return UpgradeReport(before, current_revision(), adopted)


def _made_by_create_all():
    tables = set(inspect(db.engine).get_table_names())
    return "alembic_version" not in tables and BASELINE_TABLES <= tables
