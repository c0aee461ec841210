"""An HTTP proxy in front of moto that counts requests by operation and injects the faults real AWS produces
and moto never does:
throttling (503 SlowDown), internal errors (500), slow answers and lost answers (the request is
applied, the connection closed before the response), on a seeded schedule."""

from __future__ import annotations

import contextlib
import http.client
import random
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>emulated</RequestId></Error>"
)
CODES = {
    503: ("SlowDown", "Please reduce your request rate."),
    500: ("InternalError", "We encountered an internal error."),
}


@dataclass
class FaultRule:
    """Fail matching requests with ``status`` at ``rate`` (0-1), at most ``limit`` times.
    ``status=0`` with a ``delay`` slows matching requests down instead of failing them;
    ``drop=True`` carries them out upstream, then closes the connection with no answer (a lost response)."""

    status: int = 503
    delay: float = 0.0
    rate: float = 0.2
    method: str | None = None
    path_contains: str = ""
    limit: int | None = None
    hits: int = 0
    drop: bool = False


def request_kind(method: str, path: str, body: bytes, target: str = "") -> str:
    """The AWS operation of a request, for counting: S3's by method and query, EC2's by its Action,
    SQS's by its ``X-Amz-Target`` header (``target``)."""
    if target.startswith("AmazonSQS."):
        return "sqs:" + target.split(".", 1)[1]
    query = urlsplit(path).query
    if method == "POST" and b"Action=" in body:
        return "ec2:" + body.split(b"Action=", 1)[1].split(b"&", 1)[0].decode(errors="replace")
    if method == "GET":
        return "ListObjectsV2" if "list-type=2" in query else "GetObject"
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    return {"PUT": "PutObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


class FaultProxy:
    def __init__(self, upstream: str, *, seed: int = 0, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.rules: list[FaultRule] = []
        self.injected = 0
        self.forwarded = 0
        self.calls: dict[str, int] = {}  # API operation -> requests seen (see request_kind)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_rule(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def _fault_for(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.method and rule.method != method:
                    continue
                if rule.path_contains not in path or (rule.limit is not None and rule.hits >= rule.limit):
                    continue
                if self._rng.random() < rule.rate:
                    rule.hits += 1
                    self.injected += 1
                    return rule
            self.forwarded += 1
        return None

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _proxy(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                kind = request_kind(self.command, self.path, body, self.headers.get("X-Amz-Target") or "")
                with proxy._lock:
                    proxy.calls[kind] = proxy.calls.get(kind, 0) + 1
                rule = proxy._fault_for(self.command, self.path)
                if rule is not None and rule.delay:
                    time.sleep(rule.delay)
                if rule is not None and rule.status and not rule.drop:
                    code, message = CODES.get(rule.status, ("InternalError", "injected"))
                    data = _ERROR_XML.format(code=code, message=message).encode()
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    if rule is not None and rule.drop:  # applied upstream; the client never hears of it
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _proxy

        return Handler
