"""Watching the EC2 instance metadata service (IMDSv2) for spot interruption and rebalance.

404 on ``spot/instance-action`` means no notice. Errors, timeouts, 503s and malformed bodies are
logged and retried, and never read as a notice. A 401 means the session token expired: fetch a
new one. A 403 means the metadata service is disabled on this instance.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "http://169.254.169.254"
ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
TOKEN_TTL = 21600
INSTANCE_ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"


class ImdsDisabled(Exception):
    """HTTP 403: the instance was launched with the metadata endpoint disabled."""


class ImdsUnavailable(Exception):
    """A transient failure: connection error, timeout, 5xx, or an unexpected answer."""


@dataclass(frozen=True)
class Notice:
    """An interruption: ``time`` is when the instance will be reclaimed (epoch seconds)."""

    action: str
    time: float
    source: str  # "imds", "signal", "lease" or "unwatched"

    def as_dict(self) -> dict:
        return {"action": self.action, "time": _iso(self.time), "source": self.source}


def resolve_endpoint(explicit: str | None) -> str:
    return (explicit or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def parse_instance_action(body: bytes) -> tuple[str, float]:
    """``(action, epoch seconds)`` from an instance-action document; ValueError if malformed."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("action") not in ("terminate", "stop", "hibernate"):
        raise ValueError(f"unexpected instance-action document: {body[:200]!r}")
    return doc["action"], parse_time(doc.get("time"))


def parse_time(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(f"missing time in notice: {value!r}")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class ImdsClient:
    """A minimal IMDSv2 client on urllib (no dependency beyond the standard library)."""

    def __init__(self, endpoint: str, *, timeout: float = 1.0, token_ttl: int = TOKEN_TTL) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token_ttl = token_ttl
        self._token: str | None = None
        self._token_expires = 0.0

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read() if exc.fp else b""
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ImdsUnavailable(f"{method} {path}: {getattr(exc, 'reason', exc)}") from exc

    def token(self) -> str:
        if self._token and time.monotonic() < self._token_expires:
            return self._token
        status, body = self._request(
            "PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": str(self.token_ttl)}
        )
        if status == 403:
            raise ImdsDisabled("the instance metadata service answered 403: it is disabled on this instance")
        if status != 200 or not body:
            raise ImdsUnavailable(f"token request answered HTTP {status}")
        self._token = body.decode().strip()
        self._token_expires = time.monotonic() + self.token_ttl - 60
        return self._token

    def get(self, path: str) -> bytes | None:
        """The body at ``path``, or None on 404. Refreshes the token once on 401."""
        for attempt in (1, 2):
            status, body = self._request("GET", path, {"X-aws-ec2-metadata-token": self.token()})
            if status == 200:
                return body
            if status == 404:
                return None
            if status == 401 and attempt == 1:
                log.info("metadata token rejected (401): fetching a new one")
                self._token = None
                continue
            if status == 403:
                raise ImdsDisabled(f"GET {path} answered 403: the metadata service is disabled")
            raise ImdsUnavailable(f"GET {path} answered HTTP {status}")
        raise ImdsUnavailable(f"GET {path} answered 401 twice")


class NoticeWatcher:
    """Polls for interruption and rebalance in a thread; calls back at most once per event."""

    def __init__(
        self,
        client: ImdsClient,
        *,
        on_notice: Callable[[Notice], None],
        on_rebalance: Callable[[str], None],
        interval: float = 1.0,
    ) -> None:
        self.client = client
        self.on_notice = on_notice
        self.on_rebalance = on_rebalance
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grid-imds", daemon=True)
        self._noticed = False
        self._rebalance_seen: str | None = None
        self._last_error_log = 0.0
        self.disabled = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def poll_once(self) -> None:
        """One poll of both routes. Raises ImdsDisabled; other failures are logged."""
        try:
            if not self._noticed:
                body = self.client.get(INSTANCE_ACTION)
                if body is not None:
                    try:
                        action, when = parse_instance_action(body)
                    except ValueError as exc:
                        self._log_error(f"ignoring a malformed interruption notice: {exc}")
                    else:
                        self._noticed = True
                        self.on_notice(Notice(action, when, "imds"))
            body = self.client.get(REBALANCE)
            if body is not None:
                try:
                    notice_time = str(json.loads(body).get("noticeTime", ""))
                except (ValueError, AttributeError):
                    notice_time = body.decode(errors="replace")[:64]
                if notice_time != self._rebalance_seen:
                    self._rebalance_seen = notice_time
                    self.on_rebalance(notice_time)
        except ImdsUnavailable as exc:
            self._log_error(f"metadata service unavailable, will retry: {exc}")

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
            except ImdsDisabled as exc:
                self.disabled = True
                log.warning("%s; interruption notices will only arrive as signals to the agent", exc)
                return
            except Exception as exc:  # never let the watcher die silently
                self._log_error(f"unexpected error polling the metadata service: {exc!r}")
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 30:
            self._last_error_log = now
            log.warning(message)
        else:
            log.debug(message)
