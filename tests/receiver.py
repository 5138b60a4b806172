"""A real webhook receiver on 127.0.0.1: it records every request and answers from a script."""

import contextlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once this is set


@dataclass
class Received:
    path: str
    headers: dict
    body: str

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def webhook_id(self):
        return self.headers["webhook-id"]

    def verified(self, *secrets):
        """The body, parsed, once `standardwebhooks` says one of `secrets` signed it."""
        found = None
        for secret in secrets:
            found = Webhook(secret).verify(self.body, self.headers)
        return found


class Receiver:
    """Answers each request with the next scripted Reply (then 200 for ever)."""

    def __init__(self):
        self.received = []
        self.replies = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                headers = {name.lower(): value for name, value in self.headers.items()}
                with receiver.arrived:
                    reply = receiver.replies.pop(0) if receiver.replies else Reply()
                    receiver.received.append(Received(self.path, headers, body))
                    receiver.arrived.notify_all()
                if reply.hold is not None:
                    reply.hold.wait(30)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the sender went away (killed) before the answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *replies):
        self.replies.extend(replies)

    def wait_for(self, count, timeout=30.0, path=None):
        """The requests received (to `path`, if given) once there are at least `count`."""
        def matching():
            return [item for item in self.received if path is None or item.path == path]

        with self.arrived:
            if not self.arrived.wait_for(lambda: len(matching()) >= count, timeout):
                raise AssertionError(
                    f"the receiver got {len(matching())} request(s), not {count}, in {timeout}s"
                )
            return matching()


@contextlib.contextmanager
def receiving():
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join()
