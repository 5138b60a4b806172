"""Entry points: `gunicorn app:app` serves the web, `huey_consumer app.huey` runs consumers."""

from tasks import get_queue
from webapp import create_app

app = create_app()
huey = get_queue(app).huey
