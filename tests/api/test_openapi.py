"""The OpenAPI document (webapp/api/openapi.yaml): a valid OpenAPI 3.1 document, served at
/api/openapi.json and browsable at /api/docs without a sign-in, naming exactly the routes the app
has, with examples its own schemas accept, and closed enough that drift is caught."""

import json
import re
from importlib import resources
from pathlib import Path

import pytest
import yaml
from flask import jsonify
from openapi_spec_validator import validate
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Response

from tests.contract import ContractBroken, check_answer
from tests.support import batch_body, create_batch_jobs, drain
from webapp import PROJECT_ROOT
from webapp.api.openapi import load_document
from webapp.headers import content_security_policy

METHODS = {"get", "post", "put", "patch", "delete"}
# Under /api/ but not JSON: the page that renders the document.
NOT_IN_THE_DOCUMENT = {("GET", "/api/docs")}


def documented():
    """(method, path template) of every documented operation."""
    return {
        (method.upper(), path)
        for path, item in load_document()["paths"].items()
        for method in item
        if method in METHODS
    }


def routed(app):
    """(method, path template) of every /api/ rule, in the document's notation."""
    found = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: "{" + camel(m.group(1)) + "}", rule.rule)
        found.update((method, path) for method in rule.methods - {"HEAD", "OPTIONS"})
    return found - NOT_IN_THE_DOCUMENT


def camel(name):
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def test_the_document_is_valid_openapi_3_1():
    document = load_document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


class NoDuplicateKeys(yaml.SafeLoader):
    """YAML that says one key twice in a mapping is a mistake, not "the last one wins"."""


def _mapping_without_duplicates(loader, node, deep=False):
    keys = [key.value for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    assert not twice, f"line {node.start_mark.line + 1} gives {twice} twice"
    return loader.construct_mapping(node, deep)


NoDuplicateKeys.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def test_the_yaml_gives_each_key_once():
    text = (resources.files("webapp.api") / "openapi.yaml").read_text(encoding="utf-8")
    assert yaml.load(text, Loader=NoDuplicateKeys) == load_document()


def test_every_api_route_is_documented_and_every_documented_path_is_routed(app):
    missing = routed(app) - documented()
    assert missing == set(), "routes missing from webapp/api/openapi.yaml"
    assert documented() - routed(app) == set(), "documented operations the app does not have"


def test_it_is_served_as_json_without_a_sign_in_naming_the_root_it_was_asked_at(app):
    response = app.test_client().get("/api/openapi.json", base_url="https://batchgen.example/")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    assert served["servers"] == [{"url": "https://batchgen.example"}]
    assert {**served, "servers": None} == {**load_document(), "servers": None}
    # In the order it is written (jsonify would sort it), with ⭐ as it is.
    assert list(served["paths"]) == list(load_document()["paths"])
    assert "⭐" in response.get_data(as_text=True)
    assert load_document() is load_document()  # parsed once per process


def test_behind_a_proxy_it_names_the_public_base_url(app):
    app.config["PUBLIC_BASE_URL"] = "https://img.example.com"
    served = app.test_client().get("/api/openapi.json", base_url="http://10.0.0.5:8000/")
    assert served.get_json()["servers"] == [{"url": "https://img.example.com"}]


def test_the_docs_page_needs_no_sign_in_and_loads_only_vendored_files(app):
    client = app.test_client()
    response = client.get("/api/docs")

    assert response.status_code == 200
    # Swagger UI runs under the site's strict policy: no exception for this page.
    assert response.headers["Content-Security-Policy"] == content_security_policy()
    html = response.get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert {"/static/vendor/swagger-ui-bundle-5.35.0.js", "/static/api-docs.js"} <= set(assets)
    for asset in assets:
        with client.get(asset) as served:
            assert served.status_code == 200, asset
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', html))
    # Pinned, with its licence beside it.
    vendor = Path(PROJECT_ROOT) / "static" / "vendor"
    assert "Apache License" in (vendor / "swagger-ui-5.35.0.LICENSE").read_text()
    assert "swagger-ui" in (vendor / "swagger-ui-5.35.0.NOTICE").read_text()


def required_headers(response):
    """Plausible values of the headers an answer must carry (Retry-After, WWW-Authenticate,
    ETag: its example)."""
    headers = {}
    for name, header in response.get("headers", {}).items():
        header = resolve(header)
        if header.get("required"):
            headers[name] = header.get("example", header["schema"].get("const", "5"))
    return headers


def resolve(node):
    while "$ref" in node:
        *_, kind, name = node["$ref"].split("/")
        node = load_document()["components"][kind][name]
    return node


def examples():
    """Every answer example of the document: (method, path, status, headers, example)."""
    for path, item in load_document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                response = resolve(response)
                media = response.get("content", {}).get("application/json", {})
                found = [media["example"]] if "example" in media else []
                found += [example["value"] for example in media.get("examples", {}).values()]
                for example in found:
                    yield method, path, int(status), required_headers(response), example


@pytest.mark.parametrize(
    ("method", "path", "status", "headers", "example"),
    list(examples()),
    ids=lambda value: value if isinstance(value, str | int) else "",
)
def test_every_example_is_an_answer_its_schema_accepts(method, path, status, headers, example):
    request = EnvironBuilder(
        path=path.replace("{batchId}", "batch_1796172801949_cbcaa234"),
        method=method.upper(),
        base_url="http://localhost",
    ).get_request()
    response = Response(json.dumps(example), status=status, headers=headers)
    response.mimetype = "application/json"
    assert check_answer(request, response)


def test_every_operation_has_an_example_of_its_success():
    for method, path in documented():
        responses = load_document()["paths"][path][method.lower()]["responses"]
        success = [resolve(r) for status, r in responses.items() if status.startswith("2")]
        content = success[0]["content"]
        media = content.get("application/json") or content["text/event-stream"]
        assert "example" in media or path == "/api/openapi.json", (method, path)


def test_an_answer_that_drifts_from_the_document_fails_naming_route_status_and_field(
    api_client,
):
    """The strict shapes at work: one field more, one missing, or a status nobody documented."""
    batch_id, _ = create_batch_jobs(api_client, 1)
    drain(api_client.app)
    real = api_client.get(f"/api/generate/batch/{batch_id}")
    request = real.request
    answer = real.get_json()
    assert check_answer(request, real)

    def broken(body, status=200):
        response = Response(json.dumps(body), status=status, mimetype="application/json")
        with pytest.raises(ContractBroken) as failure:
            check_answer(request, response)
        return str(failure.value)

    message = broken({**answer, "surprise": 1})
    assert f"GET /api/generate/batch/{batch_id} answered 200" in message
    assert "surprise" in message
    message = broken({**answer, "results": [{**answer["results"][0], "extra": True}]})
    assert "extra" in message
    message = broken({key: value for key, value in answer.items() if key != "finishedAt"})
    assert "finishedAt" in message
    message = broken({**answer, "summary": {**answer["summary"], "completed": "1"}})
    assert "completed" in message
    message = broken({"error": "I'm a teapot"}, status=418)
    assert "answered 418" in message


def test_an_unknown_route_under_api_is_not_checked(api_client):
    response = api_client.get("/api/nothing-here")
    assert response.status_code == 404
    assert not check_answer(response.request, response)


def test_test_clients_check_every_answer_they_get(app, api_client):
    """app.test_client() and ApiClient fail the test on an answer that breaks the document:
    here GET /api/me made to answer a field short and one too many."""
    assert api_client.post("/api/generate/batch", json=batch_body(1)).status_code == 200
    app.view_functions["api.me"] = lambda: jsonify(id=1, name="alice", balance=3)

    with pytest.raises(ContractBroken) as failure:
        api_client.get("/api/me")
    message = str(failure.value)
    assert "GET /api/me answered 200" in message
    assert "'credits' is a required property" in message
    assert "balance" in message
    with pytest.raises(ContractBroken):
        app.test_client().get("/api/me")



@pytest.mark.parametrize("path", ["/api/generate/batch", "/api/generate/photo"])
def test_the_request_examples_are_requests_the_api_accepts(api_client, path):
    body = load_document()["paths"][path]["post"]["requestBody"]["content"]["application/json"]
    response = api_client.post(path, json=body["example"])
    assert response.status_code in (200, 202), response.get_json()
