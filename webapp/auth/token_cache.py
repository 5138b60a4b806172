"""The token → user lookup, cached per web process for TOKEN_CACHE_SECONDS.

A client polling with its Bearer token would otherwise pay for a database round trip (the
token's SELECT, in a transaction of its own) on every request before the route does anything.
An entry holds a copy of the user's row, read when the token was last looked up, and is used
until it is TOKEN_CACHE_SECONDS old; then the token is looked up again. So:

- a token revoked in this process is forgotten at once (revoke_token evicts it);
- a token revoked in another process (another gunicorn worker, the CLI) stops working here
  within TOKEN_CACHE_SECONDS;
- the user's fields that a cached entry serves (`current_user.name`, …) may be as old as that;
  the balance is not served from it (/api/me reads it fresh).

TOKEN_CACHE_SECONDS = 0 turns the cache off: every request looks its token up.
"""

import threading
import time

from sqlalchemy import inspect

from ..models import User

# The User columns copied into an entry (not its relationships: a cached user is detached).
_COLUMNS = tuple(attribute.key for attribute in inspect(User).column_attrs)


class TokenCache:
    """digest → (when it expires, the token's id, the user's columns); thread-safe."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self._entries = {}
        self._lock = threading.Lock()

    def get(self, digest):
        """A fresh, detached User for the token with this digest, or None if not cached."""
        if self.seconds <= 0:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None and entry[0] <= self.clock():
                del self._entries[digest]
                entry = None
        if entry is None:
            return None
        return User(**entry[2])  # transient: a copy per request, never in a session

    def put(self, digest, token_id, user):
        if self.seconds <= 0:
            return
        columns = {key: getattr(user, key) for key in _COLUMNS}
        with self._lock:
            if len(self._entries) > 10_000:  # many tokens seen: drop what has expired
                now = self.clock()
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            self._entries[digest] = (self.clock() + self.seconds, token_id, columns)

    def forget(self, token_id=None, user_id=None):
        """Drop the entries of a token (by id) or of all a user's tokens."""
        with self._lock:
            self._entries = {
                digest: entry
                for digest, entry in self._entries.items()
                if entry[1] != token_id and (user_id is None or entry[2]["id"] != user_id)
            }
