"""Answers for a browser that may be htmx: a page or its fragment, a redirect, a page of rows."""

from dataclasses import dataclass

from flask import make_response, redirect, render_template, request

from ..errors import is_htmx
from .numbers import whole_number


def wants_fragment():
    """htmx asked for a piece of the page (not a boosted link, not a history restore)."""
    headers = request.headers
    return (
        is_htmx()
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def page_or_fragment(page, fragment, status=200, **context):
    """Render the whole page, or only the fragment when htmx asks for it.

    Templates see `as_fragment`: a fragment may add out-of-band pieces (the header's balance)
    that the page already has in place.
    """
    as_fragment = wants_fragment()
    html = render_template(fragment if as_fragment else page, as_fragment=as_fragment, **context)
    response = make_response(html, status)
    response.headers["Vary"] = "HX-Request"
    return response


def see_other(url):
    """After a POST: htmx navigates the whole window (HX-Redirect), a plain form follows a 303."""
    if is_htmx():
        response = make_response("", 200)
        response.headers["HX-Redirect"] = url
        return response
    return redirect(url, code=303)


@dataclass(frozen=True)
class Page:
    """One page of a list, newest first: its rows, its number, whether an older page exists."""

    rows: list
    number: int
    has_older: bool


def page_of(session, query, size):
    """Run `query` for the page named by `?page=` (1 when absent or nonsense)."""
    number = max(whole_number(request.args.get("page")) or 1, 1)
    rows = list(session.execute(query.offset((number - 1) * size).limit(size + 1)).all())
    return Page(rows=rows[:size], number=number, has_older=len(rows) > size)
