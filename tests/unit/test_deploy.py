"""The deploy recipe (deploy/): the compose file parses and names its services; what the compose
file, the systemd units, the nginx snippet, the Dockerfile and the env example run and set
exists (commands, files, settings of webapp/config.py). There is no Docker here: the compose file
is read, not run; the systemd units are checked by `systemd-analyze verify` when it is installed.
"""

import re
import runpy
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from webapp import config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = ROOT / ".venv" / "bin"
SETTINGS = {variable for variable, _ in config.ENVIRONMENT.values()}
# Variables the recipe sets that are not the app's settings, and who reads each.
OTHERS = {
    "INSTANCE_PATH": ROOT / "webapp" / "__init__.py",
    "PROMETHEUS_MULTIPROC_DIR": ROOT / "webapp" / "metrics" / "__init__.py",
    "WEB_BIND": DEPLOY / "gunicorn.conf.py",
    "WEB_WORKERS": DEPLOY / "gunicorn.conf.py",
    "WEB_WORKER_CONNECTIONS": DEPLOY / "gunicorn.conf.py",
    "CONSUMER_WORKERS": DEPLOY / "systemd" / "batchgen-consumer@.service",
}
BOTO3_CHAIN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
SERVICES = {
    "postgres", "redis", "minio", "bucket", "migrate",
    "web-1", "web-2", "consumer-1", "consumer-2", "nginx",
}


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _known(variable):
    if variable in SETTINGS or variable in BOTO3_CHAIN:
        return True
    reader = OTHERS.get(variable)
    return reader is not None and variable in reader.read_text()


def test_the_compose_file_names_the_fleet(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    redis = services["redis"]["command"]
    assert redis[0] == "redis-server"
    assert redis[redis.index("--appendonly") + 1] == "yes"
    assert redis[redis.index("--maxmemory-policy") + 1] == "noeviction"
    assert services["migrate"]["command"] == ["flask", "--app", "app", "init-db"]
    for web in ("web-1", "web-2"):
        assert services[web]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]
        assert services[web]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
    consumers = [services[name]["command"] for name in ("consumer-1", "consumer-2")]
    assert all(command[:2] == ["huey_consumer", "app.huey"] for command in consumers)
    assert ["--no-periodic" in command for command in consumers] == [False, True]
    environment = services["web-1"]["environment"]
    assert environment["STORAGE_URL"].startswith("s3://")
    assert environment["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    assert environment["DATABASE_URL"].startswith("postgresql+psycopg://")
    assert services["nginx"]["volumes"] == [
        "./nginx/batchgen.conf:/etc/nginx/conf.d/default.conf:ro"
    ]
    assert services["web-1"]["env_file"] == "batchgen.env"


def test_every_variable_the_recipe_sets_is_read_by_someone(compose):
    named = set()
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        if service.get("image") == "batchgen:latest":
            named |= set(environment)
    named |= set(_env_example())
    for unit in _units().values():
        named |= {line.split("=", 1)[0] for line in unit.get("Environment", [])}
    unknown = sorted(variable for variable in named if not _known(variable))
    assert unknown == []
    assert {"LOG_FORMAT", "STORAGE_URL", "S3_ENDPOINT_URL", "METRICS_TOKEN", "PROXY_HOPS"} <= named


def _env_example():
    found = {}
    for line in (DEPLOY / "batchgen.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            found[name] = value
    return found


def test_the_env_example_parses_into_settings():
    example = _env_example()
    settings = config.from_environment(example)
    assert settings["LOG_FORMAT"] == "json" and settings["PROXY_HOPS"] == 1
    assert settings["STORAGE_URL"] == "s3://batchgen/media"


def test_the_commands_the_recipe_runs_exist(compose, tmp_path, monkeypatch):
    from tests.support import make_app

    for name in ("gunicorn", "huey_consumer", "flask"):
        assert (BIN / name).exists(), name
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))  # nothing written to ours
    monkeypatch.setenv("SECRET_KEY", "test-secret")
    app = runpy.run_path(str(ROOT / "app.py"))
    assert callable(app["app"]) and hasattr(app["huey"], "create_consumer")
    built = make_app(tmp_path)
    assert built.test_cli_runner().invoke(args=["init-db", "--help"]).exit_code == 0
    from huey.consumer_options import OptionParserHandler

    parser = OptionParserHandler().get_option_parser()
    for service in ("consumer-1", "consumer-2"):
        options, args = parser.parse_args(compose["services"][service]["command"][1:])
        assert args == ["app.huey"] and options.worker_type == "thread" and options.workers == 8


def test_gunicorn_outlasts_the_photo_wait():
    settings = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    photo_wait = config.defaults("/tmp")["PHOTO_WAIT_SECONDS"]
    assert settings["worker_class"] == "gevent" and settings["timeout"] > photo_wait
    assert settings["worker_connections"] >= 1000  # every open event stream is one
    assert settings["bind"] == "0.0.0.0:8000"


def _units():
    units = {}
    for path in (DEPLOY / "systemd").glob("*.service"):
        keys = {}
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith(("#", "[")):
                key, _, value = line.partition("=")
                keys.setdefault(key, []).append(value)
        units[path.name] = keys
    return units


def test_the_systemd_units_run_the_venv_commands():
    units = _units()
    assert set(units) == {"batchgen-web.service", "batchgen-consumer@.service"}
    web = units["batchgen-web.service"]
    assert web["ExecStart"] == [
        "/opt/batchgen/.venv/bin/gunicorn -c deploy/gunicorn.conf.py app:app"
    ]
    assert web["EnvironmentFile"] == ["/etc/batchgen/batchgen.env"]
    assert "PROMETHEUS_MULTIPROC_DIR=/run/batchgen-web" in web["Environment"]
    assert web["RuntimeDirectory"] == ["batchgen-web"]


@pytest.mark.parametrize("instance, periodic", [("1", True), ("2", False), ("7", False)])
def test_only_the_first_consumer_instance_runs_periodic_tasks(instance, periodic):
    """The unit's ExecStart, run by sh as systemd would, with `exec` shown instead of done."""
    consumer = _units()["batchgen-consumer@.service"]
    (command,) = consumer["ExecStart"]
    words = shlex.split(command.replace("%i", instance))
    assert words[:2] == ["/bin/sh", "-c"]
    script = words[2].replace("exec ", "printf '%s\\n' ", 1)
    shown = subprocess.run(
        ["/bin/sh", "-c", script], env={"CONSUMER_WORKERS": "8"}, capture_output=True, text=True,
        check=True,
    ).stdout.split()
    assert shown[:6] == [
        "/opt/batchgen/.venv/bin/huey_consumer", "app.huey", "-k", "thread", "-w", "8"
    ]
    assert ("--no-periodic" not in shown) is periodic
    assert "METRICS_PORT=910%i" in consumer["Environment"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_units(tmp_path):
    """`systemd-analyze verify`, with the units pointed at this checkout instead of /opt."""
    names = []
    for path in (DEPLOY / "systemd").glob("*.service"):
        name = path.name.replace("@.", "@1.")
        (tmp_path / name).write_text(path.read_text().replace("/opt/batchgen", str(ROOT)))
        names.append(str(tmp_path / name))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Unknown" not in result.stderr and "not executable" not in result.stderr


def _nginx():
    return (DEPLOY / "nginx" / "batchgen.conf").read_text()


def _location(text, pattern):
    match = re.search(r"location " + re.escape(pattern) + r" \{(.*?)\}", text, re.S)
    assert match, pattern
    return match.group(1)


def test_the_nginx_snippet_matches_the_app(compose):
    text = _nginx()
    limit = config.defaults("/tmp")["MAX_CONTENT_LENGTH"]
    size = re.search(r"client_max_body_size (\d+)m;", text)
    assert int(size.group(1)) * 2**20 == limit
    read_timeout = int(re.search(r"^    proxy_read_timeout (\d+)s;", text, re.M).group(1))
    assert read_timeout > config.defaults("/tmp")["PHOTO_WAIT_SECONDS"]
    assert "proxy_set_header X-Request-Id $batchgen_request_id;" in text
    assert re.search(r'""\s+\$request_id;', text)  # nginx's own id when the client sent none
    assert "proxy_buffering off;" in _location(text, "~ ^/api/generate/batch/[^/]+/events$")
    assert "proxy_buffering off;" in _location(text, "/media/")
    upstream = re.findall(r"server ([\w-]+):(\d+)", text)
    assert upstream == [("web-1", "8000"), ("web-2", "8000")]
    assert {name for name, _ in upstream} <= set(compose["services"])


def test_the_nginx_snippet_routes_exist(tmp_path):
    """The routes it treats apart are the app's (the events route is another issue's: when it
    exists it must match the pattern)."""
    from tests.support import make_app

    app = make_app(tmp_path)
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    assert "/batches/<batch_id>/download" in rules
    assert any(rule.startswith("/media/") for rule in rules)
    events = [rule for rule in rules if rule.endswith("/events")]
    pattern = re.compile(r"^/api/generate/batch/[^/]+/events$")
    assert all(pattern.match(rule.replace("<batch_id>", "batch_1")) for rule in events)


def test_the_dockerfile_copies_what_exists():
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
    assert 'CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "app:app"]' in text
    assert "pip install -e '.[postgres]'" in text
