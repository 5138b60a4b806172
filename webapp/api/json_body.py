"""Request bodies as JSON, parsed as they stream in, within bounds whatever their shape.

A 50-image batch is about 70 MB of JSON. `json.loads` needs the whole text beside the values
it parses out of it, twice the body on top of the worker's own ~100 MB; parsed from the stream,
only the values are held. JSON is UTF-8 here, as RFC 8259 asks between systems.

The values are built here from the parser's plain events (ijson.basic_parse), not by ijson's
own builders: those keep a prefix string per nesting level, so a body of N `[` cost memory in
N², and a 200 KB body could take a worker to tens of GB. Here a body nests at most MAX_DEPTH
levels and MAX_VALUES values, refused the moment it goes past either; a string longer than the
route allows is refused as its bytes arrive; a key given twice in one object, a lone surrogate
and bytes that are not UTF-8 are refused too, each naming where in the body it is.
"""

import ijson

from ..generation.validation import ValidationError

# How much of the body the parser reads at a time. The C parser turns a whole chunk into
# events before we see the first, so this also bounds what a hostile body costs, whatever its
# size: measured, 16 KB of nested `[` about 2 MB and a full chunk of them about 30 MB, refused
# at the 33rd level. Smaller chunks cost more time on a real batch (64 KiB: 2.3× to parse 67 MB).
READ_CHUNK = 256 * 1024
# Deeper than any body of ours (a batch is 3 levels), far shallower than anything costly.
MAX_DEPTH = 32
# Far more values than a batch of 50 images has (about 300), far fewer than a costly list.
MAX_VALUES = 10_000
# The longest string a body may hold unless its route says otherwise (a callback, say).
DEFAULT_MAX_STRING_BYTES = 64 * 1024


def parse_json(stream, length, field="body", max_string_bytes=DEFAULT_MAX_STRING_BYTES):
    """The one JSON value of `stream` (at most `length` bytes; None: until it ends).

    No string may be longer than `max_string_bytes`: checked on the raw bytes as they stream
    in (no run between two quotes may be longer), so an endless string is refused before the
    parser builds it.
    """
    builder = _Builder(field)
    reader = _Reader(stream, length, max_string_bytes, field)
    try:
        for event, value in ijson.basic_parse(reader, use_float=True, buf_size=READ_CHUNK):
            builder.event(event, value)
    except ijson.JSONError as error:
        raise ValidationError(
            f"The body is not valid JSON: {_parse_error(error)}{builder.where()}", field
        ) from None
    except UnicodeDecodeError:
        raise ValidationError(
            "The body is not valid JSON: a string holds a lone surrogate (\\ud800-\\udfff) "
            f"or bytes that are not UTF-8{builder.where()}",
            builder.path() or field,
        ) from None
    if not builder.done:
        raise ValidationError("The body is empty: send one JSON value", field)
    return builder.root


class _Builder:
    """Builds the value from basic_parse's events, keeping only its open containers."""

    def __init__(self, field):
        self.field = field
        self.stack = []  # the open containers, outermost first
        self.keys = []  # per open container: the current key (objects), None (arrays)
        self.seen = []  # per open object: the keys it has had
        self.root = None
        self.done = False
        self.values = 0  # events seen: values, keys and containers

    def event(self, event, value):
        self.values += 1
        if self.values > MAX_VALUES:
            raise ValidationError(f"The body holds more than {MAX_VALUES:,} values", self.field)
        if event == "map_key":
            if value in self.seen[-1]:
                where = self.path(value)
                raise ValidationError(f"{where} is given twice in one object", where)
            self.seen[-1].add(value)
            self.keys[-1] = value
        elif event in ("start_map", "start_array"):
            if len(self.stack) >= MAX_DEPTH:
                raise ValidationError(
                    f"The body nests deeper than {MAX_DEPTH} levels{self.where()}", self.field
                )
            container = {} if event == "start_map" else []
            self._add(container)
            self.stack.append(container)
            self.keys.append(None)
            self.seen.append(set() if event == "start_map" else None)
        elif event in ("end_map", "end_array"):
            self.stack.pop()
            self.keys.pop()
            self.seen.pop()
            self.done = not self.stack
        else:
            self._add(value)
            self.done = not self.stack

    def _add(self, value):
        if not self.stack:
            self.root = value
        elif isinstance(self.stack[-1], dict):
            self.stack[-1][self.keys[-1]] = value
        else:
            self.stack[-1].append(value)

    def path(self, key=None):
        """Where the parser is, as the API names fields: `images[3].data`. With `key`, the
        path of that key of the innermost object."""
        parts = []
        last = len(self.stack) - 1
        for level, (container, current) in enumerate(zip(self.stack, self.keys, strict=True)):
            if isinstance(container, dict):
                current = key if level == last and key is not None else current
                if current is not None:
                    parts.append(f".{current}")
            else:
                # An open array holds its inner levels already; the innermost, not yet.
                parts.append(f"[{len(container) - (level < last)}]")
        return "".join(parts).lstrip(".")

    def where(self):
        path = self.path()
        return f" (at {path})" if path else ""


class _Reader:
    """The request stream as the parser reads it, never past Content-Length.

    The parser first reads 0 bytes to see what the stream answers, which Werkzeug's stream
    takes for a client that hung up; and under a server that ends the stream itself
    (gunicorn), one read after the last byte of a body of exactly MAX_REQUEST_BYTES would be
    taken for a body over the limit.
    """

    def __init__(self, stream, length, max_string_bytes, field):
        self.stream = stream
        self.remaining = length  # None: chunked, the stream itself tells where it ends
        self.max_string_bytes = max_string_bytes
        self.field = field
        self.since_quote = 0  # bytes read since the last quote

    def read(self, size=-1):
        if self.remaining is not None:
            size = self.remaining if size < 0 else min(size, self.remaining)
        if not size:
            return b""
        data = self.stream.read(size)
        if self.remaining is not None:
            self.remaining -= len(data)
        self._check_runs(data)
        return data

    def _check_runs(self, data):
        """Refuse a run between two quotes longer than any string may be (a run may go on
        from the chunks before)."""
        runs = data.split(b'"')
        runs[0] = self.since_quote + len(runs[0])
        longest = max([runs[0], *(len(run) for run in runs[1:])])
        if longest > self.max_string_bytes:
            raise ValidationError(
                f"The body holds a string longer than {self.max_string_bytes:,} bytes",
                self.field,
            )
        self.since_quote = runs[0] if len(runs) == 1 else len(runs[-1])


def _parse_error(error):
    """The first line of the parser's message ("parse error: trailing garbage"), without the
    excerpt of the body it draws under it."""
    message = error.args[0] if error.args else ""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    lines = str(message).strip().splitlines()
    return lines[0] if lines else "it could not be read"
