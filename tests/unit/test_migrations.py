"""The migrations build exactly the schema the models describe, on SQLite and on PostgreSQL,
and init-db adopts a database that create_all() made before there were migrations."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from tests.support import make_app
from webapp import billing, schema
from webapp.extensions import db
from webapp.models import utcnow


def _differences(app):
    """What `flask db migrate` would put in a new revision: the models minus the database."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def _describe(difference):
    """One line per difference: ('add_table', Table('x', …)) reads `add_table x`."""
    if isinstance(difference, list):  # the changes of one column come grouped
        return "; ".join(_describe(change) for change in difference)
    kind, *subjects = difference
    return " ".join([kind, *(str(getattr(subject, "name", subject)) for subject in subjects)])


def _assert_schema_matches_models(app):
    differences = _differences(app)
    assert differences == [], (
        "the migrations do not build what webapp/models.py describes; add a revision "
        "(flask --app app db migrate -m '...') for:\n"
        + "\n".join(f"  {_describe(difference)}" for difference in differences)
    )


def _head(app):
    with app.app_context():
        config = app.extensions["migrate"].migrate.get_config()
        return ScriptDirectory.from_config(config).get_current_head()


def _tables(app):
    with app.app_context():
        return set(inspect(db.engine).get_table_names())


def test_db_upgrade_builds_the_models_schema_and_downgrade_removes_it(tmp_path, database_url):
    app = make_app(tmp_path, database_url, create_tables=False)
    runner = app.test_cli_runner()

    upgraded = runner.invoke(args=["db", "upgrade"])

    assert upgraded.exit_code == 0, upgraded.output
    _assert_schema_matches_models(app)
    assert runner.invoke(args=["db", "downgrade", "base"]).exit_code == 0
    assert _tables(app) == {"alembic_version"}
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0  # and back, for the ledger check


def test_init_db_upgrades_an_empty_database_once(tmp_path, database_url):
    app = make_app(tmp_path, database_url, create_tables=False)
    runner = app.test_cli_runner()
    head = _head(app)

    first = runner.invoke(args=["init-db"])
    second = runner.invoke(args=["init-db"])

    assert first.exit_code == 0, first.output
    assert first.output == f"Upgraded the database from empty to revision {head}.\n"
    assert second.output == f"Database at revision {head}, the newest: nothing to upgrade.\n"
    _assert_schema_matches_models(app)


def test_init_db_adopts_a_database_made_by_create_all_and_keeps_its_rows(tmp_path, database_url):
    app = make_app(tmp_path, database_url, create_tables=False)
    # What `init-db` made before migrations: the tables of revision 0001 (today's models have
    # grown since), without Alembic's table.
    assert app.test_cli_runner().invoke(args=["db", "upgrade", "0001"]).exit_code == 0
    with app.app_context():
        db.session.execute(text("DROP TABLE alembic_version"))
        db.session.commit()
        assert _tables(app) == schema.BASELINE_TABLES
        # A user with 7 credits and its ledger row, written as SQL: the models are newer.
        db.session.execute(
            text("INSERT INTO users (id, name, credits, created_at) VALUES (1, 'alice', 7, :now)"),
            {"now": utcnow()},
        )
        db.session.execute(
            text(
                "INSERT INTO ledger (user_id, amount, kind, created_at) "
                "VALUES (1, 7, 'grant', :now)"
            ),
            {"now": utcnow()},
        )
        db.session.commit()
    user_id = 1

    result = app.test_cli_runner().invoke(args=["init-db"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith(
        "Found tables made before migrations existed: stamped them as revision 0001.\n"
    )
    with app.app_context():
        assert schema.current_revision() == _head(app)
        assert billing.balance(user_id) == 7
    _assert_schema_matches_models(app)
