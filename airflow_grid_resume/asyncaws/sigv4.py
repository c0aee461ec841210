"""AWS Signature Version 4 for the run watch's own S3 requests, with the signing key kept.

botocore's ``S3SigV4Auth`` derives the signing key (four HMACs) and rebuilds its header maps for
every request: about 0.1 ms of CPU, a tenth of a triggerer watching 1,000 runs. This signer makes
the same signature (tests compare the two byte for byte) for the only requests the watch signs
itself: one object, no query string, the payload hash given. The signing key is derived once per
secret, day and region, as the SigV4 specification allows ("Deriving a signing key" in the IAM
user guide: the key is valid for the day of its scope).

No I/O: the credentials are passed in, and the time (or now).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# botocore's SIGNED_HEADERS_BLACKLIST, the headers a proxy or the HTTP client may change on the way.
UNSIGNED_HEADERS = frozenset(
    (
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    )
)


def host_of(url: str) -> str:
    """The Host header an HTTP client sends for ``url`` (lowercase, the default port left out)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"http": 80, "https": 443}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class SigV4Signer:
    """Signs requests for one service and region; keeps the day's signing key per secret."""

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] | None = None  # (secret, yyyymmdd, signing key): the latest only

    def _signing_key(self, secret: str, day: str) -> bytes:
        if self._key is None or self._key[:2] != (secret, day):
            key = f"AWS4{secret}".encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, key)
        return self._key[2]

    def headers(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        access_key: str,
        secret_key: str,
        token: str | None,
        payload_hash: str = EMPTY_SHA256,
        now: float | None = None,
        host: str | None = None,
    ) -> dict[str, str]:
        """``headers`` plus the ones SigV4 adds (X-Amz-Date, X-Amz-Content-SHA256 for S3, the session
        token, Authorization). ``url`` is sent as is: its path must already be URI-encoded the way
        S3 wants it (each segment once, ``/`` kept). ``host``: ``host_of(url)``, if known already."""
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        out = dict(headers)
        out["X-Amz-Date"] = amz_date
        if self.service == "s3":  # S3 wants the payload's hash as a header too; other services only sign it
            out["X-Amz-Content-SHA256"] = payload_hash
        if token:
            out["X-Amz-Security-Token"] = token
        signed = {name.lower(): " ".join(value.split()) for name, value in out.items()}
        for name in UNSIGNED_HEADERS.intersection(signed):
            del signed[name]
        signed.setdefault("host", host if host is not None else host_of(url))
        names = sorted(signed)
        path = urlsplit(url).path or "/"
        canonical = "\n".join(
            (
                method.upper(),
                path,
                "",
                "".join(f"{name}:{signed[name]}\n" for name in names),
                ";".join(names),
                payload_hash,
            )
        )
        day = amz_date[:8]
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(secret_key, day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return out
