"""How `flask --app app serve` (what `make run` starts) takes its port and says where it is.

The port is bound before anything is printed, so a busy port is one line and a non-zero exit,
never "is running" and a sign-in link for a server that is not there. The address it serves on
is recorded, with its process id, in `instance/server.json`: the operator commands print links
on it while that process lives (`recorded_address`), and a clean stop removes the file.
"""

import errno
import json
import os
import socket
from pathlib import Path

import click
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

RECORD = "server.json"
# Hosts that mean "every interface": a link on them is reached at the loopback address.
ANY_HOST = {"", "0.0.0.0", "::"}


class QuietRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler, without its own `Server: Werkzeug/… Python/…`: the app's answers
    name the server themselves (headers.py), and nothing discloses versions."""

    def version_string(self):
        return "batchgen"

    def send_response(self, code, message=None):
        """As http.server's, less the Server header it always adds."""
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())


class _Server(ThreadedWSGIServer):
    """Werkzeug's threaded server, whose failure to bind is a ClickException (one line, exit 1)
    instead of the two lines Werkzeug prints to stderr before it exits."""

    def server_bind(self):
        try:
            super().server_bind()
        except OSError as error:
            self.socket.close()
            host, port = self.server_address[:2]
            if error.errno == errno.EADDRINUSE:
                raise click.ClickException(_busy(host, port)) from None
            raise click.ClickException(f"cannot serve on {host}:{port}: {error.strerror}") from None


def bind(host, port, app):
    """A server listening on host:port (not serving yet), or a ClickException saying why not."""
    return _Server(host, port, app, QuietRequestHandler)


def _busy(host, port):
    free = _free_port_after(host, port)
    suggestion = f"; try PORT={free} make run" if free else ""
    return f"port {port} on {host} is already in use (another batchgen?){suggestion}"


def _free_port_after(host, port, tries=20):
    """The first port above `port` that can be bound now, or None."""
    for candidate in range(port + 1, min(port + 1 + tries, 65536)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return None


def local_address(host, port):
    """The URL a person on this machine opens for a server on host:port."""
    if host in ANY_HOST:
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record_address(instance_path, url):
    """Write down where this process serves, for the operator commands' links."""
    path = Path(instance_path, RECORD)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n", encoding="utf-8")


def forget_address(instance_path):
    """Remove the record at a clean stop, if it is this process's (a later server may own it)."""
    if _read(instance_path).get("pid") == os.getpid():
        Path(instance_path, RECORD).unlink(missing_ok=True)


def recorded_address(instance_path):
    """The address of the running server, or None; a record whose process is gone is dropped."""
    record = _read(instance_path)
    if not record:
        return None
    if not isinstance(record.get("url"), str) or not _alive(record.get("pid")):
        Path(instance_path, RECORD).unlink(missing_ok=True)
        return None
    return record["url"]


def _read(instance_path):
    try:
        record = json.loads(Path(instance_path, RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True
