"""A minimal client of the EC2 instance metadata service (IMDSv2), for the monitors in ``agent/monitors``.

404 means "nothing there" (no notice yet). Errors, timeouts and 5xx raise ``ImdsUnavailable`` (the
monitors retry; never read as a notice). A 401 means the session token expired: fetch a new one. A
403 means the metadata service is disabled on this instance (``ImdsDisabled``).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

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


def resolve_endpoint(explicit: str | None) -> str:
    return (explicit or os.environ.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).rstrip("/")


def parse_instance_action(body: bytes) -> tuple[str, float]:
    """``(action, epoch seconds)`` from an instance-action document; ValueError if malformed."""
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("action") not in ("terminate", "stop", "hibernate"):
        raise ValueError(f"unexpected instance-action document: {body[:200]!r}")
    return doc["action"], parse_time(doc.get("time"))


def server_clock_offset(date_header: str | None, received_at: float) -> float | None:
    """Seconds the answering server's clock is ahead of ours, from an HTTP ``Date`` header (whole seconds, so
    the middle of its second is taken), or None without a usable header."""
    if not date_header:
        return None
    try:
        return parsedate_to_datetime(date_header).timestamp() + 0.5 - received_at
    except (TypeError, ValueError, IndexError):
        return None


def parse_time(value: object) -> float:
    if not isinstance(value, str):
        raise ValueError(f"missing time in notice: {value!r}")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()


class ImdsClient:
    """A minimal IMDSv2 client on urllib (no dependency beyond the standard library)."""

    def __init__(self, endpoint: str, *, timeout: float = 1.0, token_ttl: int = TOKEN_TTL) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.token_ttl = token_ttl
        self._token: str | None = None
        self._token_expires = 0.0
        self.clock_offset: float | None = None  # the metadata service's clock minus ours, from its last answer

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                self._observe_clock(resp.headers.get("Date"))
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            self._observe_clock(exc.headers.get("Date") if exc.headers else None)
            return exc.code, exc.read() if exc.fp else b""
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ImdsUnavailable(f"{method} {path}: {getattr(exc, 'reason', exc)}") from exc

    def _observe_clock(self, date_header: str | None) -> None:
        offset = server_clock_offset(date_header, time.time())
        if offset is not None:
            self.clock_offset = offset

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
