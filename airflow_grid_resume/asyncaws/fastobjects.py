"""GetObject and PutObject for the run watch, without botocore's generic request path.

A triggerer watching 1,000 runs makes about 400 GetObject and 17 PutObject calls a second (its
polls and ``watch.json``). botocore's generic path (parameter validation, a dozen event handlers,
endpoint rules, response parsing) costs 1.1-1.3 ms of CPU per GET; signed by ``sigv4.SigV4Signer``
and sent through the client's own HTTP session, a GET costs 0.32-0.36 ms (against
benchmarks/watch_bench.py's S3 server; docs/benchmarks.md). The fast path keeps what matters from
the client: its credentials (refreshed as botocore refreshes them), its region, its endpoint and
addressing style (read once per bucket from a presigned URL, which botocore computes without any
request), its proxies, TLS settings and connection pool.

It handles only the answers a poll expects: 200, 206 and 404 NoSuchKey for a GET, 200 for a PUT
(an unconditional overwrite, so asking again is harmless). Every other answer (a redirect to the
bucket's region, throttling, 5xx, a missing bucket, denied access) and every connection error is
asked again through botocore, which retries, redirects and raises as for any other call; an answer
that says the bucket is reached the wrong way (301, 307, 400, 403) sends all later requests for
that bucket through botocore.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any
from urllib.parse import quote

import aiohttp
import botocore
from botocore.awsrequest import AWSPreparedRequest
from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.clients import fast_timestamp
from airflow_grid_resume.asyncaws.sigv4 import EMPTY_SHA256, SigV4Signer, host_of
from airflow_grid_resume.ledger.awserror import error_code
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions

_PROBE = "grid-resume-probe"
_WRONG_WAY = (301, 307, 400, 403)  # the bucket's region or addressing is not what the client assumed
# The fast path got no answer of its own (its request failed in transport): asked again through botocore.
SEND_FAILED = (aiohttp.ClientError, OSError, asyncio.TimeoutError, botocore.exceptions.BotoCoreError)


@dataclass(frozen=True)
class ObjectRead:
    """What a poll needs of a GetObject answer."""

    data: bytes
    etag: str | None
    last_modified: datetime | None
    date: str | None  # the answer's Date header: S3's clock


def _from_botocore(response: dict, data: bytes) -> ObjectRead:
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    return ObjectRead(data, response.get("ETag"), response.get("LastModified"), headers.get("date"))


def _from_headers(headers: Any, data: bytes) -> ObjectRead:
    modified = headers.get("last-modified")
    try:
        last_modified = fast_timestamp(modified) if modified else None
    except (TypeError, ValueError):
        last_modified = None
    return ObjectRead(data, headers.get("etag"), last_modified, headers.get("date"))


class SignedSender:
    """Requests signed by ``SigV4Signer`` for ``service``, sent through a botocore client's own HTTP
    session with its credentials (refreshed as botocore refreshes them). ``ok`` is False when the
    client has neither (or is unsigned): its callers then use botocore's path alone."""

    def __init__(self, client: Any, service: str) -> None:
        signer = getattr(client, "_request_signer", None)
        self.credentials = getattr(signer, "_credentials", None)
        self.http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        unsigned = getattr(signer, "_signature_version", None) is botocore.UNSIGNED
        self.ok = self.credentials is not None and self.http is not None and not unsigned
        self.signer = SigV4Signer(client.meta.region_name, service)
        self.user_agent = client.meta.config.user_agent or "airflow-grid-resume"

    async def send(
        self, method: str, url: str, headers: dict[str, str], body: bytes | None = None, host: str | None = None
    ) -> tuple[int, Any, bytes]:
        """(status, headers, body) of one signed request."""
        headers["User-Agent"] = self.user_agent
        assert self.credentials is not None and self.http is not None, "send() is for a sender that is ok"
        creds = await self.credentials.get_frozen_credentials()
        signed = self.signer.headers(
            method,
            url,
            headers,
            access_key=creds.access_key,
            secret_key=creds.secret_key,
            token=creds.token,
            payload_hash=sha256(body).hexdigest() if body else EMPTY_SHA256,
            host=host,
        )
        response = await self.http.send(AWSPreparedRequest(method, url, signed, body, False))
        return response.status_code, response.headers, await response.content


class FastObjects:
    """``get(bucket, key, byte_range)``: the object, or None when it does not exist (yet);
    ``put(bucket, key, body)``: overwrite an object, with the encryption and checksum headers of
    ``write_options`` (signed with the rest)."""

    def __init__(self, client: Any, write_options: S3WriteOptions | None = None) -> None:
        self.client = client
        self.write_options = write_options or S3WriteOptions()
        self._bases: dict[str, tuple[str, str]] = {}  # bucket -> (its URL, the Host header for it)
        self._slow: set[str] = set()
        self._sender = SignedSender(client, "s3")
        self._fast_ok = self._sender.ok

    async def get(self, bucket: str, key: str, byte_range: str | None = None) -> ObjectRead | None:
        if self._fast_ok and bucket not in self._slow:
            try:
                status, read = await self._fast(bucket, key, byte_range)
            except SEND_FAILED:
                status, read = 0, None  # no clear answer: botocore's path retries it
            if status in (200, 206, 404):
                return read
            if status in _WRONG_WAY:
                self._slow.add(bucket)
        return await self._generic(bucket, key, byte_range)

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        if self._fast_ok and bucket not in self._slow:
            try:
                status = await self._fast_put(bucket, key, body)
            except SEND_FAILED:
                status = 0
            if status == 200:
                return
            if status in _WRONG_WAY:
                self._slow.add(bucket)
        await self.client.put_object(Bucket=bucket, Key=key, Body=body, **self.write_options.put_kwargs())

    async def _generic(self, bucket: str, key: str, byte_range: str | None) -> ObjectRead | None:
        kwargs = {"Bucket": bucket, "Key": key, **({"Range": byte_range} if byte_range else {})}
        try:
            response = await self.client.get_object(**kwargs)
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise
        async with response["Body"] as body:
            return _from_botocore(response, await body.read())

    async def _base(self, bucket: str) -> tuple[str, str]:
        """The bucket's URL as botocore addresses it (virtual-hosted or path style, its endpoint)
        and the Host header that goes with it."""
        if bucket not in self._bases:
            url = await self.client.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": _PROBE}, ExpiresIn=60
            )
            path = url.split("?", 1)[0]
            if not path.endswith("/" + _PROBE):
                raise botocore.exceptions.BotoCoreError()
            self._bases[bucket] = (path[: -len(_PROBE)], host_of(path))
        return self._bases[bucket]

    async def _send(
        self, method: str, bucket: str, key: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, Any, bytes]:
        """One signed request through the client's HTTP session: (status, headers, body)."""
        base, host = await self._base(bucket)
        return await self._sender.send(method, base + quote(key, safe="/~"), headers, body, host=host)

    async def _fast(self, bucket: str, key: str, byte_range: str | None) -> tuple[int, ObjectRead | None]:
        """(status, the read): status 0 when the answer is not one this path handles."""
        status, headers, data = await self._send("GET", bucket, key, {"Range": byte_range} if byte_range else {})
        if status in (200, 206):
            return status, _from_headers(headers, data)
        if status == 404 and b"<Code>NoSuchKey</Code>" in data:
            return 404, None
        return status if status in _WRONG_WAY else 0, None

    async def _fast_put(self, bucket: str, key: str, body: bytes) -> int:
        """The status, 0 when the answer is not one this path handles."""
        headers = {"Content-Length": str(len(body)), **self.write_options.headers(body)}
        status, _, _ = await self._send("PUT", bucket, key, headers, body)
        return status if status == 200 or status in _WRONG_WAY else 0
