"""batchgen: batch image generation. create_app() builds the WSGI app and its queue."""

import os

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from .extensions import csrf, db, migrate

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def create_app(config=None, instance_path=None):
    """Build the app: defaults, then instance/config.py, then the environment, then `config`."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=instance_path
        or os.environ.get("INSTANCE_PATH")
        or os.path.join(PROJECT_ROOT, "instance"),
        template_folder="../templates",
        static_folder="../static",
    )
    from . import config as settings

    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(settings.defaults(app.instance_path))
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_mapping(settings.from_environment())
    if config:
        app.config.from_mapping(config)
    if (app.config["PUBLIC_BASE_URL"] or "").startswith("https://"):
        # Served over https: the session cookie must never travel over plain http.
        app.config["SESSION_COOKIE_SECURE"] = True
    if not app.config["SECRET_KEY"]:
        # Kept in instance/, so a restart keeps sessions and signed links valid.
        app.config["SECRET_KEY"] = settings.instance_secret(app.instance_path)

    if app.config["PROXY_HOPS"]:  # behind nginx (deploy/): trust its X-Forwarded-For/-Proto
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    # "/api/generate/batch//cancel" is a 404 answered in JSON, not a redirect to another URL.
    app.url_map.merge_slashes = False
    db.init_app(app)
    from . import versions  # noqa: F401  the change counter's triggers, made with the tables

    # The migrations live inside the package, so an installed wheel carries them too.
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "migrations"))

    from . import auth, errors, fanout, headers, logs, providers, storage

    logs.init_app(app)  # first: every answer, an error's too, carries the request id
    auth.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    storage.init_app(app)
    providers.init_app(app)
    fanout.init_app(app)  # with REDIS_URL, each commit that changed a batch says so

    from .api import bp as api_bp
    from .auth.views import bp as auth_bp
    from .web import bp as web_bp

    app.register_blueprint(api_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(web_bp)
    from . import limits

    limits.init_app(app)
    # Forms carry CSRF tokens; the JSON API is exempt: it needs a JSON body or a Bearer token,
    # which a cross-site form can send neither of (and the session cookie is SameSite=Lax).
    csrf.init_app(app)
    csrf.exempt(api_bp)
    # The probes and the scrape: no sign-in, no limit, no CSRF, no cookie (health.py, metrics/).
    from . import health
    from .metrics import views as metrics_views

    health.init_app(app)
    metrics_views.init_app(app)
    from .storage.views import signed_url
    from .words import count_of

    app.jinja_env.globals["signed_url"] = signed_url
    app.jinja_env.filters["count_of"] = count_of

    from . import cli

    cli.init_app(app)

    import tasks

    tasks.init_app(app)
    return app


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record):
    """WAL lets readers run beside the writer; busy_timeout makes writers wait, not fail."""
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
