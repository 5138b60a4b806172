"""Lists a page at a time, by keyset: the query string's `limit`, `cursor` and `status`,
checked, and the opaque cursors that name where a page ended. Pure.

A cursor is the last row's position (urlsafe base64 of a little JSON, named for its list), not
an offset: rows added since never shift a later page, and it says nothing about whose list it
was, since every query also filters on the caller.
"""

import base64
import binascii
import json
import re
from datetime import datetime

from ..models import BatchStatus, looks_like_id
from .validation import ValidationError

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
BATCH_STATUSES = BatchStatus.UNFINISHED + BatchStatus.TERMINAL
LIMIT_DIGITS = re.compile(r"[0-9]{1,9}")
CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}")
LARGEST_ID = 2**63 - 1
BATCHES, LEDGER = "batches", "ledger"


def parse_limit(text):
    """How many rows a page holds: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent (or empty)."""
    if not text:
        return DEFAULT_LIMIT
    text = text.strip()
    number = int(text) if LIMIT_DIGITS.fullmatch(text) else 0
    if not 1 <= number <= MAX_LIMIT:
        raise ValidationError(f"limit must be a whole number from 1 to {MAX_LIMIT}", "limit")
    return number


def parse_statuses(text):
    """The batch statuses asked for, from "completed" or "partial,failed"; None for all."""
    if not text:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part in BATCH_STATUSES for part in parts):
        raise ValidationError(
            f"status must be one of {', '.join(BATCH_STATUSES)}, or several of them "
            "separated by commas",
            "status",
        )
    return tuple(dict.fromkeys(parts))


def _encode(list_name, *position):
    raw = json.dumps([list_name, *position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text, list_name):
    """The position a cursor of `list_name` holds (a list), or ValidationError."""
    try:
        if not CURSOR.fullmatch(text):
            raise ValueError("not urlsafe base64")
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(decoded, list) or not decoded or decoded[0] != list_name:
            raise ValueError("not a cursor of this list")
        return decoded[1:]
    except (ValueError, binascii.Error) as error:  # JSON and UTF-8 errors are ValueErrors
        raise _bad_cursor() from error


def _bad_cursor():
    return ValidationError(
        "cursor is not one this list gave: pass the nextCursor of the page before, unchanged",
        "cursor",
    )


def batch_cursor(batch):
    """The cursor of the page after the one that ended with `batch`."""
    return _encode(BATCHES, batch.created_at.isoformat(timespec="microseconds"), batch.id)


def batch_position(text):
    """(created_at, batch id) of a batches cursor; None when absent (or empty)."""
    if not text:
        return None
    position = _decode(text, BATCHES)
    try:
        created_at, batch_id = position
        created_at = datetime.fromisoformat(created_at)
    except (TypeError, ValueError) as error:
        raise _bad_cursor() from error
    if created_at.tzinfo is not None or not looks_like_id(batch_id):
        raise _bad_cursor()
    return created_at, batch_id


def ledger_cursor(entry):
    return _encode(LEDGER, entry.id)


def ledger_position(text):
    """The entry id a ledger cursor holds; None when absent (or empty)."""
    if not text:
        return None
    position = _decode(text, LEDGER)
    entry_id = position[0] if len(position) == 1 else None
    if type(entry_id) is not int or not 0 < entry_id <= LARGEST_ID:
        raise _bad_cursor()
    return entry_id
