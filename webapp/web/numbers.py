"""Numbers people type in forms or find in URLs: ASCII digits only, and bounded.

`str.isdigit()` is true for "²" and "٣", which `int()` then refuses or reads as another number,
and 25 digits overflow the database's integers: every number of a query string or a form goes
through `whole_number`.
"""

import re

DIGITS = re.compile(r"[0-9]{1,9}")


def whole_number(text):
    """The number `text` spells in ASCII digits (spaces around allowed), below a billion;
    None for anything else ("", "-1", "1e3", "²", 25 digits, not a string)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    return int(text) if DIGITS.fullmatch(text) else None
