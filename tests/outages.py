"""Real outages for the readiness tests, without touching the shared servers: a TCP proxy in front
of one (stopped: the path is down, every connection through it cut), a throwaway `redis-server`
process, and a port that takes connections and never answers."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time

from tests.support import free_port, service_available, wait_for


class TcpProxy:
    """127.0.0.1:`port` → `target`, relayed by threads. `stop()` closes the listener and cuts
    every connection through it (the server is unreachable: refused, like a stopped server);
    `start()` listens again on the same port."""

    def __init__(self, target_host, target_port, port=None):
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self.listener = None
        self.sockets = set()
        self.lock = threading.Lock()

    def start(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def stop(self):
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() that holds it
            self.listener.close()
            self.listener = None
        with self.lock:
            cut, self.sockets = self.sockets, set()
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    @property
    def running(self):
        return self.listener is not None


class RedisServer:
    """A `redis-server` of the test's own on a free port, in memory only; stop and start it."""

    def __init__(self, log_path):
        self.binary = shutil.which("redis-server")
        self.port = free_port()
        self.log_path = log_path
        self.process = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        arguments = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        arguments += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(arguments, stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: service_available("127.0.0.1", self.port), timeout=20)
        return self

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        self.process = None
        deadline = time.monotonic() + 10
        while service_available("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def silent_port():
    """A port that accepts connections (the kernel's backlog) and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def redis_available():
    return shutil.which("redis-server") is not None and os.access(
        shutil.which("redis-server"), os.X_OK
    )
