"""Logs (webapp/logs.py): X-Request-Id taken when sane or made, echoed on every answer; under
LOG_FORMAT=json one JSON object per line with the request, user and batch ids; text unchanged."""

import json
import logging
import re

import pytest

from tests.support import ApiClient, create_batch_id, create_user, make_app
from webapp import logs

MADE = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def root_logging():
    """Whatever a json app puts on the root logger is taken off again after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def _answers(app, token):
    """One request of each kind of answer: a page, a redirect, API JSON, API errors (401, 404,
    405, 413), a page's 404, and an unexpected failure (500)."""
    client = app.test_client()
    bearer = {"Authorization": f"Bearer {token}"}
    return {
        "page": lambda h: client.get("/login", headers=h),
        "redirect": lambda h: client.get("/batches", headers=h),
        "json": lambda h: client.get("/api/me", headers={**bearer, **h}),
        "401": lambda h: client.get("/api/me", headers=h),
        "404 json": lambda h: client.get("/api/generate/batch/nope", headers={**bearer, **h}),
        "405 json": lambda h: client.put("/api/me", headers={**bearer, **h}),
        "413 json": lambda h: client.post(
            "/api/generate/batch", json={"prompt": "x" * 2048}, headers={**bearer, **h}
        ),
        "404 page": lambda h: client.get("/no/such/page", headers=h),
        "500": lambda h: client.get("/boom", headers=h),
    }


def _app_with_a_failing_route(tmp_path, **settings):
    app = make_app(tmp_path, MAX_CONTENT_LENGTH=1024, **settings)

    @app.get("/boom")
    def boom():
        raise RuntimeError("the test's own failure")

    return app


def test_every_answer_echoes_a_sane_request_id_and_makes_one_otherwise(tmp_path):
    app = _app_with_a_failing_route(tmp_path)
    _, token = create_user(app)
    statuses = {}
    for kind, send in _answers(app, token).items():
        kept = send({"X-Request-Id": "nginx-9f2c.7:a_B"})
        assert kept.headers["X-Request-Id"] == "nginx-9f2c.7:a_B", kind
        statuses[kind] = kept.status_code
        made = [
            send(headers).headers["X-Request-Id"]
            for headers in (
                {},
                {"X-Request-Id": ""},
                {"X-Request-Id": "x" * 129},
                {"X-Request-Id": "two words"},
                {"X-Request-Id": "a;rm -rf /"},
                {"X-Request-Id": "ünïcode"},
            )
        ]
        assert all(MADE.fullmatch(value) for value in made), (kind, made)
        assert len(set(made)) == len(made), kind
    assert statuses == {
        "page": 200, "redirect": 302, "json": 200, "401": 401, "404 json": 404,
        "405 json": 405, "413 json": 413, "404 page": 404, "500": 500,
    }
    longest = app.test_client().get("/login", headers={"X-Request-Id": "y" * 128})
    assert longest.headers["X-Request-Id"] == "y" * 128


def _json_lines(err):
    lines = [line for line in err.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_json_format_writes_one_object_per_line_with_the_ids(tmp_path, capsys, root_logging):
    app = _app_with_a_failing_route(tmp_path, LOG_FORMAT="json")
    client = ApiClient(app, *create_user(app))
    batch_id = create_batch_id(client, count=1)
    capsys.readouterr()

    status = client.get(f"/api/generate/batch/{batch_id}", headers={"X-Request-Id": "req-1"})
    failed = app.test_client().get("/boom", headers={"X-Request-Id": "req-2"})
    logging.getLogger("webapp.somewhere").warning("outside any request")

    assert status.status_code == 200 and failed.status_code == 500
    lines = _json_lines(capsys.readouterr().err)
    answered = [line for line in lines if line["logger"] == "webapp.requests"]
    assert answered[0] == {
        "time": answered[0]["time"],
        "level": "INFO",
        "logger": "webapp.requests",
        "message": f"GET /api/generate/batch/{batch_id} 200",
        "method": "GET",
        "path": f"/api/generate/batch/{batch_id}",
        "status": 200,
        "client": "127.0.0.1",
        "duration_ms": answered[0]["duration_ms"],
        "request_id": "req-1",
        "user_id": client.user_id,
        "batch_id": batch_id,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", answered[0]["time"])
    assert isinstance(answered[0]["duration_ms"], float)
    error = next(line for line in lines if line["logger"] == "webapp.errors")
    assert error["level"] == "ERROR" and error["request_id"] == "req-2"
    assert error["message"] == "unhandled error on GET /boom"
    assert "RuntimeError: the test's own failure" in error["exc_info"]
    assert "user_id" not in error  # nobody signed in
    assert answered[1]["status"] == 500 and answered[1]["request_id"] == "req-2"
    assert lines[-1] == {
        "time": lines[-1]["time"],
        "level": "WARNING",
        "logger": "webapp.somewhere",
        "message": "outside any request",
    }


def test_a_sign_in_link_is_logged_as_its_route_not_its_token(tmp_path, capsys, root_logging):
    app = make_app(tmp_path, LOG_FORMAT="json")
    capsys.readouterr()

    app.test_client().get("/auth/link/secret-token-123")

    err = capsys.readouterr().err
    assert "secret-token-123" not in err
    assert _json_lines(err)[-1]["path"] == "/auth/link/<token>"


def test_bound_ids_reach_lines_logged_inside_and_end_with_the_block(capsys, root_logging):
    app_log = logging.getLogger("webapp.generation.test")
    handler = logging.StreamHandler()
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.ContextFilter())
    root_logging.addHandler(handler)

    with logs.bound(batch_id="batch_1"):
        with logs.bound(generation_id="gen_1", batch_id=None):
            app_log.warning("inner")
        app_log.warning("outer")
    app_log.warning("after")

    lines = _json_lines(capsys.readouterr().err)
    seen = [(line["message"], line.get("batch_id"), line.get("generation_id")) for line in lines]
    assert seen == [
        ("inner", "batch_1", "gen_1"),
        ("outer", "batch_1", None),
        ("after", None, None),
    ]


def test_text_format_leaves_logging_as_it_was(tmp_path, root_logging):
    before = list(root_logging.handlers), root_logging.level

    make_app(tmp_path)

    assert (list(root_logging.handlers), root_logging.level) == before


def test_json_apps_built_again_keep_one_handler(tmp_path, root_logging):
    make_app(tmp_path / "a", LOG_FORMAT="json")
    make_app(tmp_path / "b", LOG_FORMAT="json", LOG_LEVEL="WARNING")

    ours = [h for h in root_logging.handlers if getattr(h, "batchgen", False)]
    assert len(ours) == 1 and root_logging.level == logging.WARNING


def test_an_unknown_log_format_is_refused_at_start(tmp_path):
    with pytest.raises(ValueError, match="LOG_FORMAT='xml' is not one of text, json"):
        make_app(tmp_path, LOG_FORMAT="xml")


@pytest.mark.parametrize("hops, client", [(0, "127.0.0.1"), (1, "203.0.113.7")])
def test_the_client_address_comes_from_x_forwarded_for_only_behind_a_proxy(
    tmp_path, capsys, root_logging, hops, client
):
    app = make_app(tmp_path, LOG_FORMAT="json", PROXY_HOPS=hops)
    capsys.readouterr()

    app.test_client().get("/login", headers={"X-Forwarded-For": "203.0.113.7"})

    assert _json_lines(capsys.readouterr().err)[-1]["client"] == client
