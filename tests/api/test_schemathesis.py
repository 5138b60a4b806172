"""A bounded property-based pass: schemathesis generates requests for every documented operation
from the document the live server serves (GET /api/openapi.json), sends them over HTTP with a
real user's Bearer token, and checks each answer: no server error, and a status, content type,
headers and body the document describes.

Bounded to a few seconds: EXAMPLES_PER_OPERATION generated cases per operation, plus the
document's own examples (which create real batches and photos). Derandomized, so a failure
reproduces; the count of cases is printed and kept in TEST_ARTIFACTS/schemathesis.txt.
"""

import os
import uuid
from collections import defaultdict
from pathlib import Path

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import create_user, free_port, make_app, serving
from webapp import PROJECT_ROOT

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS", Path(PROJECT_ROOT) / "instance" / "test-artifacts")
)


def test_generated_requests_get_no_server_error_and_only_documented_answers(
    tmp_path, capsys, record_property
):
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    app = make_app(tmp_path, PUBLIC_BASE_URL=root)
    _, token = create_user(app, credits=10_000)
    auth = {"Authorization": f"Bearer {token}"}
    ran = {}
    statuses = defaultdict(set)  # operation → the statuses it answered

    with serving(app, port):
        # As served (from_url would leave out the document's own route).
        served = requests.get(f"{root}/api/openapi.json", timeout=10)
        schema = schemathesis.openapi.from_dict(served.json())
        schema.config.update(base_url=schema.raw_schema["servers"][0]["url"])
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:
            examples = schema.get_strategies_from_examples(operation)
            strategies = {
                "examples": st.one_of(examples) if examples else None,
                "positive": operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
                "negative": operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
            }
            for kind, strategy in strategies.items():
                if strategy is not None:
                    bound = 2 * len(examples) if kind == "examples" else EXAMPLES_PER_OPERATION
                    ran[operation.label, kind] = run(strategy, auth, bound, statuses)

    total = sum(ran.values())
    lines = [f"schemathesis: {total} cases over {len(operations)} operations, no failure"]
    for operation in operations:
        counts = ", ".join(
            f"{ran[operation.label, kind]} {kind}"
            for kind in ("examples", "positive", "negative")
            if (operation.label, kind) in ran
        )
        answered = ", ".join(map(str, sorted(statuses[operation.label])))
        lines.append(f"  {operation.label}: {counts}; answered {answered}")
    report = "\n".join(lines)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "schemathesis.txt").write_text(report + "\n")
    record_property("schemathesis_cases", total)
    with capsys.disabled():
        print(f"\n{report}")
    assert {label for label, _ in ran} == {operation.label for operation in operations}
    # The document's own examples reach the success answers, not only the refusals.
    for label in ("POST /api/generate/batch", "GET /api/models", "GET /api/me"):
        assert 200 in statuses[label], (label, statuses[label])
    assert 202 in statuses["POST /api/generate/photo"]  # PHOTO_WAIT_SECONDS is 0 here


def run(strategy, auth, bound, statuses):
    """Send at most `bound` of the strategy's cases, each checked; answers how many ran."""
    count = 0

    @given(case=strategy)
    @settings(
        max_examples=bound,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def call(case):
        nonlocal count
        count += 1
        if case.headers and "Idempotency-Key" in case.headers:
            # Each case is a new request: the document's one example key, sent to the batch
            # route and then to the photo route, would be a reuse answered 422 every time.
            case.headers["Idempotency-Key"] = f"case-{uuid.uuid4().hex}"
        response = case.call_and_validate(headers=auth, checks=CHECKS)
        statuses[case.operation.label].add(response.status_code)

    try:
        call()
    except Unsatisfiable:  # nothing to break (negative) in an operation without inputs
        assert count == 0
    return count
