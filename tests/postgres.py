"""Per-test PostgreSQL schemas: every test gets an empty schema of its own on one server.

A schema is far cheaper than a database, and the URL names it in libpq's `options`, so every
connection made from that URL (the app's pool, a `huey_consumer` or `flask serve` subprocess
given it as DATABASE_URL) lands in it without any code knowing it is a test.
"""

import os
import secrets

from sqlalchemy import create_engine, make_url, text

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class PostgresServer:
    """The test server, reached through one admin engine that creates and drops schemas."""

    def __init__(self, url=TEST_DATABASE_URL):
        self.url = make_url(url)
        self.engine = create_engine(
            self.url,
            isolation_level="AUTOCOMMIT",
            pool_size=1,
            connect_args={"connect_timeout": 3},
        )

    def describe(self):
        """The server's URL without its password, for skip and failure messages."""
        return self.url.render_as_string(hide_password=True)

    def check(self):
        """Raise sqlalchemy's OperationalError if the server does not answer."""
        with self.engine.connect() as admin:
            admin.execute(text("SELECT 1"))

    def create_schema(self):
        """Create an empty schema; answer (its name, a URL whose connections live in it)."""
        name = f"t_{secrets.token_hex(6)}"
        with self.engine.connect() as admin:
            admin.execute(text(f"CREATE SCHEMA {name}"))
        # application_name tags the schema's connections, so drop_schema can find stragglers.
        url = self.url.update_query_dict(
            {"options": f"-csearch_path={name}", "application_name": name}
        )
        return name, url.render_as_string(hide_password=False)

    def drop_schema(self, name):
        """Drop the schema and everything in it, ending any connection a test left open."""
        with self.engine.connect() as admin:
            # A subprocess killed mid-transaction may hold locks until its backend notices.
            admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            admin.execute(text("SET lock_timeout = '30s'"))
            admin.execute(text(f"DROP SCHEMA {name} CASCADE"))

    def close(self):
        self.engine.dispose()
