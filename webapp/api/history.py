"""GET /api/batches and GET /api/ledger: the caller's batches and credit movements, newest
first, a page at a time (keyset cursors, see generation/paging.py). Registered on the API's
blueprint by webapp/api/__init__.py."""

from flask import jsonify, request
from flask_login import current_user, login_required

from ..generation import history, paging, presenters


@login_required
def list_batches():
    """The caller's batches, newest first, each with its summary; `status` filters them."""
    limit = paging.parse_limit(request.args.get("limit"))
    after = paging.batch_position(request.args.get("cursor"))
    statuses = paging.parse_statuses(request.args.get("status"))
    page = history.batch_page(current_user.id, limit, after, statuses)
    return jsonify(presenters.batch_list(page))


@login_required
def list_ledger():
    """The caller's ledger, newest first, each entry with the balance right after it."""
    limit = paging.parse_limit(request.args.get("limit"))
    before = paging.ledger_position(request.args.get("cursor"))
    return jsonify(presenters.ledger_list(history.ledger_page(current_user.id, limit, before)))
