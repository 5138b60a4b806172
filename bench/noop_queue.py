"""The reference of bench/queue.py: a bare Huey with one no-op task, on the queue storage of the
deployment it runs in (`huey_consumer bench.noop_queue.huey`, with the deployment's environment).

It has the app's Huey options (no results, UTC) and its own queue: a SQLite file of its own
beside the app's, or a queue named HUEY_NAME-noop on the app's Redis database. The task only
appends one byte to a file, so the benchmark can count the tasks that ran by the file's size.
"""

import os

from huey import RedisHuey, SqliteHuey


def counter_path(environ):
    return os.path.join(environ["INSTANCE_PATH"], "noop-done")


def create(environ):
    """A no-op queue for the deployment whose settings are `environ`; answers (huey, task)."""
    name = environ["HUEY_NAME"] + "-noop"
    options = {"results": False, "utc": True}
    if environ.get("REDIS_URL"):
        huey = RedisHuey(name, url=environ["REDIS_URL"], **options)
    else:
        filename = os.path.join(environ["INSTANCE_PATH"], "noop-huey.db")
        huey = SqliteHuey(name, filename=filename, **options)
    done = os.open(counter_path(environ), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @huey.task(name="noop")
    def noop():
        os.write(done, b".")

    return huey, noop


# What huey_consumer loads: the queue of the deployment whose environment it was started in.
if os.environ.get("HUEY_NAME") and os.environ.get("INSTANCE_PATH"):
    huey, noop = create(os.environ)
