"""gunicorn's settings for batchgen's web (`gunicorn -c deploy/gunicorn.conf.py app:app`).

gevent workers: each request is a greenlet, so a batch's event stream, open for as long as the
batch runs, costs a socket and some memory rather than a thread, and one worker holds up to
WEB_WORKER_CONNECTIONS of them (README, Serving; docs/operations.md, Serving). psycopg and
redis-py wait on their sockets cooperatively under gevent's monkey-patching, and the streams
hold no database connection while they wait (webapp/api/events.py), so the pool's 15
connections per worker serve them all. A photo request (`POST /api/generate/photo`) holds its
request open while the image is made (up to PHOTO_WAIT_SECONDS, 120 s), sleeping between its
reads; the timeout, the most a worker's loop may go without a heartbeat, stays above it. Under
LOG_FORMAT=json gunicorn's own lines are JSON too. With PROMETHEUS_MULTIPROC_DIR set (metrics
across workers), a worker that exits is marked dead so its gauges leave the sums.
"""

import os

bind = os.environ.get("WEB_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "2000"))
timeout = int(os.environ.get("WEB_TIMEOUT_SECONDS", "150"))
graceful_timeout = 30
# nginx logs every request (with $request_id); the app logs one line per answer under json.
accesslog = None

if os.environ.get("LOG_FORMAT", "text").lower() == "json":
    # gunicorn's own lines (start, workers, timeouts) as JSON on stderr; the root logger is left
    # without a handler for the app to put its JSON one on (webapp/logs.py), and gunicorn's
    # access lines are dropped: the app logs each answer with its request id.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": []},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{asctime}{levelname}{name}{message}",
                "style": "{",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "INFO", "propagate": False},
        },
    }


def child_exit(server, worker):
    """A worker is gone: prometheus-client's multiprocess mode drops its live gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
