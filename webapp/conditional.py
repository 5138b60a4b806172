"""Conditional GETs of the status answers: an `If-None-Match` that holds the answer's ETag gets
a `304 Not Modified` with no body, decided before the answer is built.

The tags come from generation/etags.py (weak: they name the answer's meaning). If-None-Match
is compared weakly, as RFC 9110 says it is; `*` matches any answer that exists. The answers
carry `Cache-Control: private, no-cache`: a browser or client may keep one and must ask again
each time, and no shared cache keeps anyone's.
"""

import functools

from flask import make_response, request
from werkzeug.http import unquote_etag

CACHE_CONTROL = "private, no-cache"


def conditional(tag, build, vary=None):
    """304 when `tag` (None: no tag, build as always) matches the request's If-None-Match,
    else `build()`'s answer, tagged when it is a 200. `vary`: the answer's Vary header."""
    if tag is not None and _matches(tag):
        response = make_response("", 304)
        _label(response, tag, vary)
        return response
    response = make_response(build())
    if tag is not None and response.status_code == 200:
        _label(response, tag, vary)
    return response


def _matches(tag):
    value, _ = unquote_etag(tag)
    return request.if_none_match.contains_weak(value)


def _label(response, tag, vary):
    response.headers["ETag"] = tag
    response.headers["Cache-Control"] = CACHE_CONTROL
    if vary:
        response.headers["Vary"] = vary


def conditional_get(tag_of, vary=None):
    """A GET view answered through `conditional`: `tag_of(**view_args)` tells its tag (None
    for a request it does not tag: the view answers it as always, its 4xx included)."""

    def decorate(view):
        @functools.wraps(view)
        def answer(*args, **kwargs):
            return conditional(tag_of(*args, **kwargs), lambda: view(*args, **kwargs), vary)

        return answer

    return decorate
