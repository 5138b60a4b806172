"""The change counter: `batches.version` and `generations.version`, kept by the database.

Every state change of a batch or of one of its images bumps the batch's version in the same
statement, so in the same transaction, whoever writes it: a claim, an outcome (success, a
retryable failure back to pending, a permanent failure and its refund), a cancel, a pause or
resume, a canary's hold, approval or reject, the reaper's requeue, retention deleting a file.
A changed image takes the batch's new version as its own (`generations.version`), so "the
images of batch X changed since version v" is one indexed query (`ix_generations_batch_version`).
A single photo has no batch: its own version counts its changes.

A batch's hold (paused, awaiting approval) is told in its waiting images' reasons
(`batch_paused`, `awaiting_approval`), so a change of it changes their answers too: a pause, a
resume, a canary's hold and its approval also give the batch's pending images its new version
(HOLD_*; migration 0011). Other changes of a batch's status (queued → running, the end) leave a
waiting image's answer as it was, and its version with it.

Triggers rather than a call at every write site: a write added tomorrow cannot forget it. They
fire only when a column an answer shows changed (WATCHED_*), not on a heartbeat or a lease's
extension, so an unchanged batch keeps its version (its ETag) while its images run.

Locks: an image's write locks its row and then its batch's row, the order a fenced outcome
already took them in (`outcomes.fenced_update` touches the batch after its UPDATE); a claim and
a cancel hold the batch row before they write images, so the trigger's batch UPDATE finds the
lock already theirs.

The same DDL is made by migration 0010 and, for databases built by `create_all()` (the tests),
by the listeners below, after each table is created. A change of the triggers is a new
revision that replaces them (CREATE OR REPLACE on PostgreSQL; DROP and CREATE on SQLite).
"""

from sqlalchemy import DDL, event

from .models import Batch, Generation

# The columns of an image whose change is a change of its answer (results[], reasons, events).
WATCHED_GENERATION = (
    "status",
    "attempts",
    "not_before",
    "provider_task_id",
    "result_key",
    "result_deleted_at",
    "input_deleted_at",
    "error_code",
    "error_message",
    "started_at",
    "finished_at",
)
# The batch's own: not heartbeat_at (every outcome touches it), not version itself.
WATCHED_BATCH = (
    "status",
    "started_at",
    "finished_at",
    "refunded",
    "paused_at",
    "canary",
    "awaiting_since",
    "approved_at",
    "concurrency",
    "callback_url",
)


def _sqlite_changed(columns):
    return " OR ".join(f"OLD.{column} IS NOT NEW.{column}" for column in columns)


def _row(prefix, columns):
    return "ROW(" + ", ".join(f"{prefix}.{column}" for column in columns) + ")"


def _postgresql_changed(columns):
    return f"{_row('OLD', columns)} IS DISTINCT FROM {_row('NEW', columns)}"


SQLITE = (
    f"""
CREATE TRIGGER generations_version AFTER UPDATE ON generations FOR EACH ROW
WHEN NEW.version = OLD.version AND ({_sqlite_changed(WATCHED_GENERATION)})
BEGIN
    UPDATE batches SET version = version + 1 WHERE id = NEW.batch_id;
    UPDATE generations SET version = COALESCE(
        (SELECT version FROM batches WHERE id = NEW.batch_id), OLD.version + 1
    ) WHERE id = NEW.id;
END
""",
    f"""
CREATE TRIGGER batches_version AFTER UPDATE ON batches FOR EACH ROW
WHEN NEW.version = OLD.version AND ({_sqlite_changed(WATCHED_BATCH)})
BEGIN
    UPDATE batches SET version = version + 1 WHERE id = NEW.id;
END
""",
)

POSTGRESQL = (
    f"""
CREATE OR REPLACE FUNCTION batchgen_generation_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = OLD.version AND {_postgresql_changed(WATCHED_GENERATION)} THEN
        IF NEW.batch_id IS NULL THEN
            NEW.version := OLD.version + 1;
        ELSE
            UPDATE batches SET version = version + 1 WHERE id = NEW.batch_id
            RETURNING version INTO NEW.version;
        END IF;
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE TRIGGER generations_version BEFORE UPDATE ON generations
FOR EACH ROW EXECUTE FUNCTION batchgen_generation_version()
""",
    f"""
CREATE OR REPLACE FUNCTION batchgen_batch_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.version = OLD.version AND {_postgresql_changed(WATCHED_BATCH)} THEN
        NEW.version := OLD.version + 1;
    END IF;
    RETURN NEW;
END $$
""",
    """
CREATE TRIGGER batches_version BEFORE UPDATE ON batches
FOR EACH ROW EXECUTE FUNCTION batchgen_batch_version()
""",
)

# The hold's columns, and the statuses that are a hold (BatchStatus.HELD).
_HELD = "('awaiting_approval', 'paused')"
_HOLD_CHANGED = (
    f"((OLD.status IN {_HELD} OR NEW.status IN {_HELD}) AND OLD.status <> NEW.status)"
    " OR OLD.canary IS DISTINCT FROM NEW.canary"
    " OR OLD.approved_at IS DISTINCT FROM NEW.approved_at"
)
# SQLite's triggers run in no promised order: this one writes the version that batches_version
# gives the batch (the old one plus one, as every hold change is a watched column's change).
HOLD_SQLITE = (
    f"""
CREATE TRIGGER batches_hold_version AFTER UPDATE ON batches FOR EACH ROW
WHEN NEW.version = OLD.version AND ({_HOLD_CHANGED.replace("IS DISTINCT FROM", "IS NOT")})
BEGIN
    UPDATE generations SET version = OLD.version + 1
    WHERE batch_id = NEW.id AND status = 'pending';
END
""",
)
# PostgreSQL's runs after batches_version (a BEFORE trigger) set NEW.version.
HOLD_POSTGRESQL = (
    """
CREATE OR REPLACE FUNCTION batchgen_hold_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE generations SET version = NEW.version
    WHERE batch_id = NEW.id AND status = 'pending' AND version < NEW.version;
    RETURN NULL;
END $$
""",
    f"""
CREATE TRIGGER batches_hold_version AFTER UPDATE ON batches FOR EACH ROW
WHEN ({_HOLD_CHANGED}) EXECUTE FUNCTION batchgen_hold_version()
""",
)
HOLD_DROP = {
    "sqlite": ("DROP TRIGGER IF EXISTS batches_hold_version",),
    "postgresql": (
        "DROP TRIGGER IF EXISTS batches_hold_version ON batches",
        "DROP FUNCTION IF EXISTS batchgen_hold_version()",
    ),
}

DROP = {
    "sqlite": (
        "DROP TRIGGER IF EXISTS generations_version",
        "DROP TRIGGER IF EXISTS batches_version",
    ),
    "postgresql": (
        "DROP TRIGGER IF EXISTS generations_version ON generations",
        "DROP TRIGGER IF EXISTS batches_version ON batches",
        "DROP FUNCTION IF EXISTS batchgen_generation_version()",
        "DROP FUNCTION IF EXISTS batchgen_batch_version()",
    ),
}


def create_statements(dialect):
    """The DDL that makes the triggers of migration 0010 on this dialect (SQLite, PostgreSQL)."""
    return {"sqlite": SQLITE, "postgresql": POSTGRESQL}[dialect]


def hold_statements(dialect):
    """The DDL of the hold's trigger (migration 0011)."""
    return {"sqlite": HOLD_SQLITE, "postgresql": HOLD_POSTGRESQL}[dialect]


def _attach(table, statements, dialect):
    for statement in statements:
        event.listen(table, "after_create", DDL(statement).execute_if(dialect=dialect))


# create_all() makes `batches` before `generations` (the foreign key), and each trigger is
# made once its own table is: the first half of each list is the generations' trigger.
_attach(Generation.__table__, SQLITE[:1], "sqlite")
_attach(Batch.__table__, SQLITE[1:], "sqlite")
_attach(Generation.__table__, POSTGRESQL[:2], "postgresql")
_attach(Batch.__table__, POSTGRESQL[2:], "postgresql")
# After `generations` exists (the hold's trigger writes it).
_attach(Generation.__table__, HOLD_SQLITE, "sqlite")
_attach(Generation.__table__, HOLD_POSTGRESQL, "postgresql")
