"""An emulator of the EC2 instance metadata service with spot interruption and rebalance notices and
EC2 scheduled events.

It speaks IMDSv2 with real status codes: ``PUT /latest/api/token`` (400 without a valid TTL
header), 401 for a missing, unknown or expired token, 404 on ``spot/instance-action`` until a
notice is scheduled, 403 for every request once disabled. The token's response leaves with the IP
TTL set to the hop limit (``HttpPutResponseHopLimit``), as EC2 sends it: a client behind one more
router (a container's network namespace) than the limit allows never gets it; on loopback, where
nothing routes, every process gets it. Faults (401/403/500/503 or a stalled
response) can be injected for the next N requests. Control routes under ``/_emulator/`` drive it
over HTTP; see docs/emulator.md. Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_TTL = 21600
# EC2's scheduled event codes (docs: "Scheduled events for your instances").
EVENT_CODES = ("instance-stop", "instance-retirement", "instance-reboot", "system-reboot", "system-maintenance")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_time(epoch: float) -> str:
    """A scheduled event's time as the metadata service writes it: ``21 Jan 2019 09:00:43 GMT``."""
    ts = datetime.fromtimestamp(epoch, timezone.utc)
    return f"{ts.day} {ts.strftime('%b %Y %H:%M:%S')} GMT"


@dataclass
class Fault:
    status: int | None = None
    delay: float = 0.0
    count: int = 1
    path_prefix: str = "/latest/"


class MetadataService:
    """One instance's metadata endpoint, on loopback. Use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        instance_id: str = "i-0emulated0000000",
        instance_type: str = "g5.xlarge",
        zone: str = "us-east-1a",
        market: str = "spot",
        hop_limit: int = 1,
    ) -> None:
        if not 1 <= hop_limit <= 64:
            raise ValueError(f"hop_limit must be 1 to 64, got {hop_limit}")
        self.hop_limit = hop_limit
        self.meta = {
            "instance-id": instance_id,
            "instance-type": instance_type,
            "placement/availability-zone": zone,
            "instance-life-cycle": market,
            "ami-id": "ami-0emulated",
        }
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._notice: tuple[str, float, float] | None = None  # action, visible_at, reclaim_at
        self._rebalance_at: float | None = None
        self._events: list[dict] = []  # scheduled events: EventId, Code, Description, State, times (epoch)
        self._faults: list[Fault] = []
        self.disabled = False
        self.requests: dict[str, int] = {}
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MetadataService:
        self._thread = threading.Thread(target=self._server.serve_forever, name="imds-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> MetadataService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control -----------------------------------------------------------------------------
    def schedule_notice(self, *, action: str = "terminate", in_seconds: float = 120.0, after: float = 0.0) -> dict:
        """Make a notice visible ``after`` seconds from now, reclaiming ``in_seconds`` after that."""
        if action not in ("terminate", "stop", "hibernate"):
            raise ValueError(f"action must be terminate, stop or hibernate, got {action!r}")
        visible = time.time() + after
        with self._lock:
            self._notice = (action, visible, visible + in_seconds)
        return self.state()

    def schedule_rebalance(self, *, after: float = 0.0) -> dict:
        with self._lock:
            self._rebalance_at = time.time() + after
        return self.state()

    def schedule_event(
        self,
        *,
        code: str = "instance-stop",
        in_seconds: float = 120.0,
        after: float = 0.0,
        duration: float = 3600.0,
        description: str | None = None,
    ) -> dict:
        """Post an EC2 scheduled event ``after`` seconds from now, whose window (NotBefore to NotAfter) opens
        ``in_seconds`` after that and lasts ``duration`` seconds."""
        if code not in EVENT_CODES:
            raise ValueError(f"code must be one of {', '.join(EVENT_CODES)}, got {code!r}")
        if in_seconds < 0 or duration < 0:
            raise ValueError("in_seconds and duration must be 0 or more")
        visible = time.time() + after
        event = {
            "EventId": f"instance-event-{secrets.token_hex(9)[:17]}",
            "Code": code,
            "Description": description or f"scheduled {code.replace('-', ' ')}",
            "State": "active",
            "visible_at": visible,
            "not_before": visible + in_seconds,
            "not_after": visible + in_seconds + duration,
        }
        with self._lock:
            self._events.append(event)
        return {**self.state(), "event_id": event["EventId"]}

    def cancel_event(self, event_id: str) -> dict:
        """The event moves from ``events/maintenance/scheduled`` to ``events/maintenance/history``, canceled."""
        with self._lock:
            for event in self._events:
                if event["EventId"] == event_id:
                    event["State"] = "canceled"
                    event["Description"] = f"[Canceled] {event['Description']}"
                    break
            else:
                raise ValueError(f"no scheduled event {event_id!r}")
        return self.state()

    def inject_fault(
        self, *, status: int | None = None, delay: float = 0.0, count: int = 1, path_prefix: str = "/latest/"
    ) -> dict:
        if status is None and delay <= 0:
            raise ValueError("a fault needs a status or a delay")
        with self._lock:
            self._faults.append(Fault(status, delay, count, path_prefix))
        return self.state()

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def set_disabled(self, disabled: bool = True) -> None:
        self.disabled = disabled

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._notice = None
            self._rebalance_at = None
            self._events.clear()
            self._faults.clear()
            self.disabled = False
            self.requests.clear()

    def state(self) -> dict:
        with self._lock:
            notice = self._notice
            return {
                "endpoint": self.url,
                "disabled": self.disabled,
                "notice": None
                if notice is None
                else {"action": notice[0], "visible_at": notice[1], "time": iso(notice[2]), "reclaim_at": notice[2]},
                "rebalance_at": self._rebalance_at,
                "scheduled_events": [dict(e) for e in self._events],
                "faults": [f.__dict__ for f in self._faults],
                "tokens": len(self._tokens),
                "hop_limit": self.hop_limit,
                "requests": dict(self.requests),
                **{k.replace("/", "_"): v for k, v in self.meta.items()},
            }

    # -- serving -----------------------------------------------------------------------------
    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _answer(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str, str]:
        """(status, content type, body) for a metadata request."""
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
        if self.disabled:
            return 403, "text/plain", "Forbidden"
        now = time.time()
        if method == "PUT":
            if path != "/latest/api/token":
                return 405, "text/plain", "Method Not Allowed"
            try:
                ttl = int(headers.get("x-aws-ec2-metadata-token-ttl-seconds", ""))
            except ValueError:
                return 400, "text/plain", "Bad Request: missing or invalid X-aws-ec2-metadata-token-ttl-seconds"
            if not 1 <= ttl <= MAX_TTL:
                return 400, "text/plain", "Bad Request: TTL must be 1-21600"
            token = secrets.token_urlsafe(32)
            with self._lock:
                self._tokens[token] = now + ttl
            return 200, "text/plain", token
        if method != "GET":
            return 405, "text/plain", "Method Not Allowed"
        asked = headers.get("x-aws-ec2-metadata-token")
        with self._lock:
            expires = self._tokens.get(asked or "")
        if expires is None or expires < now:
            return 401, "text/plain", "Unauthorized"
        return self._metadata(path, now)

    def _metadata(self, path: str, now: float) -> tuple[int, str, str]:
        prefix = "/latest/meta-data/"
        if not path.startswith(prefix):
            return 404, "text/plain", "Not Found"
        name = path[len(prefix) :].rstrip("/")
        with self._lock:
            notice = self._notice if self._notice and self._notice[1] <= now else None
            rebalance = self._rebalance_at if self._rebalance_at and self._rebalance_at <= now else None
            events = [dict(e) for e in self._events if e["visible_at"] <= now]
        if name == "spot/instance-action":
            if notice is None:
                return 404, "text/plain", "Not Found"
            return 200, "application/json", json.dumps({"action": notice[0], "time": iso(notice[2])})
        if name == "spot/termination-time":
            if notice is None or notice[0] != "terminate":
                return 404, "text/plain", "Not Found"
            return 200, "text/plain", iso(notice[2])
        if name == "events/recommendations/rebalance":
            if rebalance is None:
                return 404, "text/plain", "Not Found"
            return 200, "application/json", json.dumps({"noticeTime": iso(rebalance)})
        if name in ("events/maintenance/scheduled", "events/maintenance/history"):
            wanted = name.endswith("scheduled")
            listed = [
                {
                    "NotBefore": event_time(e["not_before"]),
                    "Code": e["Code"],
                    "Description": e["Description"],
                    "EventId": e["EventId"],
                    "NotAfter": event_time(e["not_after"]),
                    "State": e["State"],
                }
                for e in events
                if (e["State"] == "active") == wanted
            ]
            return 200, "application/json", json.dumps(listed)
        if name in self.meta:
            return 200, "text/plain", self.meta[name]
        if name == "":
            return 200, "text/plain", "\n".join(sorted(self.meta))
        return 404, "text/plain", "Not Found"

    def _control(self, method: str, path: str, body: dict) -> tuple[int, dict]:
        name = path[len("/_emulator/") :]
        try:
            if method == "GET" and name == "state":
                return 200, self.state()
            if method != "POST":
                return 405, {"error": "use POST"}
            if name == "notice":
                return 200, self.schedule_notice(
                    action=body.get("action", "terminate"),
                    in_seconds=float(body.get("in_seconds", 120)),
                    after=float(body.get("after", 0)),
                )
            if name == "rebalance":
                return 200, self.schedule_rebalance(after=float(body.get("after", 0)))
            if name == "scheduled-event":
                return 200, self.schedule_event(
                    code=str(body.get("code", "instance-stop")),
                    in_seconds=float(body.get("in_seconds", 120)),
                    after=float(body.get("after", 0)),
                    duration=float(body.get("duration", 3600)),
                    description=body.get("description"),
                )
            if name == "cancel-scheduled-event":
                return 200, self.cancel_event(str(body.get("event_id", "")))
            if name == "fault":
                return 200, self.inject_fault(
                    status=body.get("status"),
                    delay=float(body.get("delay", 0)),
                    count=int(body.get("count", 1)),
                    path_prefix=body.get("path_prefix", "/latest/"),
                )
            if name == "disable":
                self.set_disabled(bool(body.get("disabled", True)))
                return 200, self.state()
            if name == "expire-tokens":
                self.expire_tokens()
                return 200, self.state()
            if name == "reset":
                self.reset()
                return 200, self.state()
        except (TypeError, ValueError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no control route {path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _send(self, status: int, content_type: str, body: str, *, ttl: int | None = None) -> None:
                data = body.encode()
                if ttl is not None:
                    # Every packet of this response, retransmissions included, carries it: the connection ends
                    # with it (restoring the TTL while TCP still holds unsent data would let it through).
                    self.connection.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
                    self.close_connection = True
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                if ttl is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                # The client may have given up (a stalled-response fault), as with a real IMDS.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)
                    self.wfile.flush()

            def _handle(self, method: str) -> None:
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if path.startswith("/_emulator/"):
                    try:
                        body = json.loads(raw) if raw else {}
                    except ValueError:
                        self._send(400, "application/json", json.dumps({"error": "body must be JSON"}))
                        return
                    status, doc = service._control(method, path, body if isinstance(body, dict) else {})
                    self._send(status, "application/json", json.dumps(doc))
                    return
                fault = service._take_fault(path)
                if fault and fault.delay:
                    time.sleep(fault.delay)
                if fault and fault.status:
                    self._send(fault.status, "text/plain", "injected fault")
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, content_type, body = service._answer(method, path, headers)
                token = method == "PUT" and path == "/latest/api/token" and status == 200
                self._send(status, content_type, body, ttl=service.hop_limit if token else None)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_POST(self) -> None:
                self._handle("POST")

        return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-resume imds", description="Run the metadata-service emulator.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--instance-id", default="i-0emulated0000000")
    args = parser.parse_args(argv)
    service = MetadataService(args.host, args.port, instance_id=args.instance_id).start()
    print(json.dumps({"endpoint": service.url, "control": service.url + "/_emulator/"}), flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
