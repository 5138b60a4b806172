"""/api/docs in Chromium: Swagger UI, vendored, renders the contract under the page's CSP, lists
every operation, and logs no error and no refusal by the Content Security Policy."""

import threading

import pytest
from werkzeug.serving import make_server

from tests.browser.test_live_grid import chromium, console_errors  # noqa: F401 (a fixture)
from tests.support import make_app
from webapp.api.openapi import load_document

pytestmark = [pytest.mark.browser]
METHODS = {"get", "post", "put", "patch", "delete"}
# Every refusal by the Content Security Policy, as the page itself sees it.
CSP_WATCH = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", event =>
    window.cspViolations.push(`${event.effectiveDirective} ${event.blockedURI}`));
"""


@pytest.fixture
def docs_server(tmp_path):
    app = make_app(tmp_path)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    server.server_close()


def documented_operations():
    """(method, path) of every operation, and of every webhook (Swagger UI names it by its key)."""
    document = load_document()
    items = {**document["paths"], **document.get("webhooks", {})}
    return sorted(
        (method.upper(), path)
        for path, item in items.items()
        for method in item
        if method in METHODS
    )


def test_the_docs_page_lists_every_operation_without_errors(docs_server, chromium):  # noqa: F811
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    errors = console_errors(page)
    violations = []
    page.on(
        "console",
        lambda message: violations.append(message.text)
        if "Content Security Policy" in message.text
        else None,
    )

    page.add_init_script(CSP_WATCH)
    response = page.goto(f"{docs_server}/api/docs")
    assert response.status == 200
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    shown = page.eval_on_selector_all(
        ".opblock",
        """blocks => blocks.map(block => [
            block.querySelector('.opblock-summary-method').textContent.trim(),
            block.querySelector('.opblock-summary-path').dataset.path])""",
    )
    assert sorted(map(tuple, shown)) == documented_operations()
    assert page.inner_text(".info .title").startswith(load_document()["info"]["title"])

    # An operation opens, with its answers and their schemas rendered.
    page.click("#operations-batches-createBatch .opblock-summary")
    page.wait_for_selector("#operations-batches-createBatch .responses-table")
    assert "402" in page.inner_text("#operations-batches-createBatch .responses-table")

    # The page talked to nobody but us: the document came from /api/openapi.json.
    spec = page.evaluate("() => window.ui.specSelectors.specJson().toJS()")
    assert spec["servers"] == [{"url": docs_server}]
    assert spec["paths"] == load_document()["paths"]
    assert violations == [], violations
    assert page.evaluate("window.cspViolations") == []
    assert errors == [], "\n".join(errors)
    page.close()
