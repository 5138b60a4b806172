"""The stub kie.ai's HTTP side: routes kie's paths to a KieStub (see __init__.py)."""

import json
import sys
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CREATE_PATHS = {
    "/api/v1/jobs/createTask": "jobs",
    "/api/v1/flux/kontext/generate": "kontext",
    "/api/v1/gpt4o-image/generate": "gpt4o",
}
RECORD_PATHS = {
    "/api/v1/jobs/recordInfo": "jobs",
    "/api/v1/flux/kontext/record-info": "kontext",
    "/api/v1/gpt4o-image/record-info": "gpt4o",
}
UPLOAD_PATHS = {"/api/file-base64-upload": "base64", "/api/file-stream-upload": "stream"}
CREDIT_PATH = "/api/v1/chat/credit"
FILES_PREFIX = "/files/"


def serve(stub, port=0):
    """Start serving `stub` on 127.0.0.1:`port` (0: any free port) in a daemon thread."""
    server = _Server(("127.0.0.1", port), _Handler)
    server.stub = stub
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    return server, thread


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A client that gave up (timed out) is expected; anything else is a bug in the stub."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            raise


class _Handler(BaseHTTPRequestHandler):
    """Routes kie's paths to the KieStub on `self.server.stub`."""

    def do_POST(self):
        stub = self.server.stub
        path = urlsplit(self.path).path
        if path not in CREATE_PATHS and path not in UPLOAD_PATHS:
            return self._send_json({"code": 404, "msg": "Not found"}, 404)
        if not self._authorised():
            return
        if UPLOAD_PATHS.get(path) == "stream":
            return self._send_json(stub.upload("stream", self._form_fields()))
        body = self._json_body()
        if not isinstance(body, dict):
            return self._send_json({"code": 422, "msg": "The body must be a JSON object"})
        if path in UPLOAD_PATHS:
            return self._send_json(stub.upload("base64", body))
        answer = stub.create(CREATE_PATHS[path], body)
        if answer is not None:
            headers = {}
            if answer.get("code") == 429 and stub.retry_after is not None:
                headers["Retry-After"] = str(stub.retry_after)
            self._send_json(answer, headers=headers)

    def do_GET(self):
        stub = self.server.stub
        url = urlsplit(self.path)
        if url.path.startswith(FILES_PREFIX):
            content = stub.download(url.path[len(FILES_PREFIX) :], self.headers)
            if content is None:
                return self._send(404, b"not found", "text/plain")
            return self._send(200, content, "image/png")
        if url.path not in RECORD_PATHS and url.path != CREDIT_PATH:
            return self._send_json({"code": 404, "msg": "Not found"}, 404)
        if not self._authorised():
            return
        if url.path == CREDIT_PATH:
            return self._send_json(stub.balance())
        task_id = (parse_qs(url.query).get("taskId") or [""])[0]
        self._send_json(stub.record(RECORD_PATHS[url.path], task_id))

    def _authorised(self):
        if self.server.stub.authorised(self.headers.get("Authorization")):
            return True
        self._send_json({"code": 401, "msg": "You do not have access permissions"}, 401)
        return False

    def _raw_body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self):
        try:
            return json.loads(self._raw_body() or b"null")
        except ValueError:
            return None

    def _form_fields(self):
        """A multipart form's fields: `file` as bytes, the others as text."""
        head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + self._raw_body())
        fields = {}
        for part in message.iter_parts() if message.is_multipart() else ():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            fields[name] = payload if name == "file" else payload.decode("utf-8", "replace")
        return fields

    def _send_json(self, body, status=200, headers=None):
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _send(self, status, content, content_type, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format, *args):
        pass  # quiet: tests assert on what the stub recorded, not on its log
