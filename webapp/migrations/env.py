"""Alembic's environment: runs the migrations on the Flask app's engine, against its models.

Flask-Migrate loads it for `flask --app app db …`, and so does `init-db` (webapp/schema.py).
"""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app

# Alembic's progress lines for a command-line run; a server or a test run that configured
# logging already keeps its own.
if not logging.getLogger().handlers:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

migrate = current_app.extensions["migrate"]
metadata = migrate.db.metadata


def skip_empty_revision(migration_context, revision, directives):
    """`db migrate` with no change to the models writes no empty revision file."""
    autogenerating = getattr(context.config.cmd_opts, "autogenerate", False)
    if autogenerating and directives[0].upgrade_ops.is_empty():
        directives[:] = []
        logging.getLogger("alembic.env").info("No changes in schema detected.")


def run_migrations_offline():
    """Print the SQL instead of running it (`flask --app app db upgrade --sql`)."""
    context.configure(
        url=migrate.db.engine.url,
        target_metadata=metadata,
        literal_binds=True,
        **migrate.configure_args,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online():
    with migrate.db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            process_revision_directives=skip_empty_revision,
            **migrate.configure_args,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
