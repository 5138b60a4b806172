"""The contract, checked on every answer: a test client that validates each answer of a documented
`/api/` route against the OpenAPI document (webapp/api/openapi.yaml) with openapi-core.

`make_app` sets it as every test app's `test_client_class`, so `app.test_client()` and
`ApiClient` check each answer they get, and a test fails on an answer the document does not
describe, naming the route, the status and what is wrong. Only answers are checked: the hostile
input tests send broken requests on purpose. A request to no documented operation (an unknown
path, a method the path has not) is not checked: the document makes no promise about it.
"""

import functools

from flask.testing import FlaskClient
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.validation.response.exceptions import ResponseValidationError

from webapp.api.openapi import document_for


class AnsweredRequest(WerkzeugOpenAPIRequest):
    """The request an answer was for, as openapi-core reads it to find the operation: its body
    was read by the app, and only the answer is checked."""

    @property
    def body(self):
        return None


class ContractBroken(AssertionError):
    """An answer of a documented route that the document does not describe."""


@functools.cache
def contract(root_url):
    """The document as openapi-core reads it, served at `root_url` (one per host)."""
    return OpenAPI.from_dict(document_for(root_url))


def check_answer(request, response):
    """Raise ContractBroken if `response`, the answer to the werkzeug `request`, breaks the
    document; answers whether a documented operation was checked."""
    openapi = contract(request.host_url)
    try:
        openapi.validate_response(
            AnsweredRequest(request), WerkzeugOpenAPIResponse(response)
        )
    except (PathNotFound, OperationNotFound):  # no documented operation: nothing promised
        return False
    except ResponseValidationError as error:
        raise ContractBroken(describe(request, response, error)) from None
    except Exception as error:  # ResponseNotFound (an undocumented status), and the like
        raise ContractBroken(describe(request, response, error)) from None
    return True


def describe(request, response, error):
    """What broke, readably: the route, the status, each schema error with where it is."""
    lines = [
        f"{request.method} {request.path} answered {response.status_code}, which breaks the "
        "contract in webapp/api/openapi.yaml:",
        f"  {type(error).__name__}: {error}",
    ]
    cause = error
    while cause is not None:
        for schema_error in getattr(cause, "schema_errors", ()) or ():
            where = "/".join(str(part) for part in schema_error.absolute_path) or "(the body)"
            lines.append(f"  at {where}: {schema_error.message}")
        cause = cause.__cause__ or cause.__context__
    body = response.get_data(as_text=True)
    lines.append(f"  the answer: {body[:2000]}")
    return "\n".join(lines)


# Answers already found to keep the contract: a test polling until a batch finishes gets the
# same answer many times, and checking one takes milliseconds (jsonschema, twice over for
# unevaluatedProperties), so each distinct answer is checked once per process.
_KEPT = set()
_KEPT_MAX = 50_000


class ContractClient(FlaskClient):
    """FlaskClient that checks every answer of an /api/ route against the document."""

    def open(self, *args, **kwargs):
        response = super().open(*args, **kwargs)
        request = response.request
        if request.path.startswith("/api/"):
            body = response.get_data()  # buffered, so the test can still read it
            seen = hash((request.method, request.host_url, request.path, response.status_code,
                         response.content_type, response.headers.get("Retry-After"), body))
            if seen not in _KEPT:
                check_answer(request, response)
                if len(_KEPT) < _KEPT_MAX:
                    _KEPT.add(seen)
        return response
