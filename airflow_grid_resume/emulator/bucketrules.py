"""Buckets with an organisation's security rules, which moto does not enforce (it stores bucket
policies but never evaluates them, and its ETag is always the body's MD5):

- a bucket policy that denies uploads without ``x-amz-server-side-encryption: <required>``
  (PutObject, CopyObject, CreateMultipartUpload): 403 AccessDenied with S3's XML error body;
- SSE-KMS ETags: for an ``aws:kms`` bucket every ETag the client sees (headers and XML bodies) is
  a random-looking value that is not the body's MD5, as S3 answers for SSE-KMS objects; the
  client's ``If-Match`` is mapped back before moto compares;
- Object Lock default retention: a PutObject or UploadPart without Content-MD5 or an
  ``x-amz-checksum-*`` header gets 400 InvalidRequest with S3's words (retention itself is not
  emulated: versions can still be deleted);
- versioning on, in moto itself (moto keeps versions and delete markers as S3 does).

``POST /_emulator/bucket-rules`` sets a bucket's rules (docs/emulator.md).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, unquote

Reply = tuple[str, list, bytes]

ENCRYPTIONS = ("AES256", "aws:kms")
LOCK_MESSAGE = (
    "Content-MD5 OR x-amz-checksum- HTTP header is required for Put {what} requests with Object Lock parameters"
)
_S3_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
    "<RequestId>{request_id}</RequestId><HostId>{host_id}</HostId></Error>"
)
_ETAG_XML = re.compile(rb"<ETag>(&quot;|\")?([0-9a-f]{32})(-\d+)?(&quot;|\")?</ETag>")
_ETAG_HEADER = re.compile(r'^"?([0-9a-f]{32})(-\d+)?"?$')
# PUTs on an object's subresources: not uploads of its bytes.
_SUBRESOURCES = ("tagging", "acl", "retention", "legal-hold")


@dataclass(frozen=True)
class BucketRules:
    """``require_encryption``: the value the bucket policy demands in ``x-amz-server-side-encryption``
    (None: no such policy); ``object_lock``: default retention (uploads need a checksum);
    ``versioning``: versioning enabled (set in moto when the rules are set)."""

    require_encryption: str | None = None
    object_lock: bool = False
    versioning: bool = False

    def __post_init__(self) -> None:
        if self.require_encryption is not None and self.require_encryption not in ENCRYPTIONS:
            raise ValueError(f"require_encryption must be one of {', '.join(ENCRYPTIONS)} or null")

    @classmethod
    def from_doc(cls, doc: dict) -> BucketRules:
        if doc.get("strict"):  # every rule at once: SSE-KMS, Object Lock, versioning
            doc = {"require_encryption": "aws:kms", "object_lock": True, "versioning": True, **doc}
        return cls(doc.get("require_encryption"), bool(doc.get("object_lock")), bool(doc.get("versioning")))


def s3_error(status: str, code: str, message: str) -> Reply:
    data = _S3_ERROR.format(
        code=code, message=message, request_id=os.urandom(8).hex().upper(), host_id=os.urandom(24).hex()
    ).encode()
    return status, [("Content-Type", "application/xml"), ("Content-Length", str(len(data)))], data


def bucket_and_key(path: str) -> tuple[str, str]:
    """(bucket, key) of a path-style S3 request (the only style the local endpoint gets)."""
    bucket, _, key = path.lstrip("/").partition("/")
    return bucket, unquote(key)


def kms_etag(md5: str) -> str:
    """A stable stand-in for an SSE-KMS object's ETag: 32 hex digits that are not the body's MD5."""
    return hashlib.sha256(b"sse-kms:" + md5.encode()).hexdigest()[:32]


class BucketRuleBook:
    """Every bucket's rules, and what they do to a request and its answer."""

    def __init__(self) -> None:
        self.rules: dict[str, BucketRules] = {}
        self._real_etag: dict[str, str] = {}  # the stand-in ETag -> moto's (for If-Match)
        self._lock = threading.Lock()
        self.refused = 0

    def set(self, bucket: str, rules: BucketRules) -> dict:
        if rules.versioning:
            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.s3.models import s3_backends

            try:
                s3_backends[DEFAULT_ACCOUNT_ID]["aws"].put_bucket_versioning(bucket, "Enabled")
            except Exception as exc:  # moto's MissingBucket
                raise ValueError(f"cannot turn versioning on for bucket {bucket!r}: {exc}") from exc
        with self._lock:
            if rules == BucketRules():
                self.rules.pop(bucket, None)
            else:
                self.rules[bucket] = rules
        return {"bucket": bucket, **asdict(rules)}

    def state(self) -> dict:
        return {"buckets": {b: asdict(r) for b, r in self.rules.items()}, "refused": self.refused}

    def of(self, environ: dict) -> BucketRules | None:
        if not self.rules:
            return None
        return self.rules.get(bucket_and_key(environ.get("PATH_INFO", ""))[0])

    # -- before moto -----------------------------------------------------------------------
    def refuse(self, environ: dict, rules: BucketRules) -> Reply | None:
        """S3's refusal of this request under ``rules``, or None when it passes."""
        method = environ.get("REQUEST_METHOD", "")
        bucket, key = bucket_and_key(environ.get("PATH_INFO", ""))
        query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        if not key or any(name in query for name in _SUBRESOURCES):
            return None
        part = "partNumber" in query and "uploadId" in query
        upload = method == "PUT" and not part  # PutObject or CopyObject
        create_multipart = method == "POST" and "uploads" in query
        if rules.require_encryption and (upload or create_multipart):
            asked = environ.get("HTTP_X_AMZ_SERVER_SIDE_ENCRYPTION")
            if asked != rules.require_encryption:
                self.refused += 1
                return s3_error(
                    "403 Forbidden",
                    "AccessDenied",
                    f"User: arn:aws:iam::123456789012:user/emulated is not authorized to perform: s3:PutObject on "
                    f'resource: "arn:aws:s3:::{bucket}/{key}" with an explicit deny in a resource-based policy',
                )
        copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
        if rules.object_lock and method == "PUT" and not copy:
            has_checksum = "HTTP_CONTENT_MD5" in environ or any(
                name.startswith("HTTP_X_AMZ_CHECKSUM_") and name != "HTTP_X_AMZ_CHECKSUM_ALGORITHM" for name in environ
            )
            if not has_checksum:
                self.refused += 1
                return s3_error(
                    "400 Bad Request", "InvalidRequest", LOCK_MESSAGE.format(what="Part" if part else "Object")
                )
        return None

    def map_conditions(self, environ: dict, rules: BucketRules) -> None:
        """Conditions on a stand-in ETag, back to moto's own (an unknown one stays and fails as it should)."""
        if rules.require_encryption != "aws:kms":
            return
        for name in ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_X_AMZ_COPY_SOURCE_IF_MATCH"):
            match = _ETAG_HEADER.match(environ.get(name, "").strip())
            real = self._real_etag.get(match.group(1)) if match else None
            if match and real is not None:
                environ[name] = f'"{real}{match.group(2) or ""}"'

    # -- after moto ------------------------------------------------------------------------
    def answered(self, environ: dict, reply: Reply, rules: BucketRules) -> Reply:
        """moto's answer with SSE-KMS ETags in place of its MD5s: in the ETag header, and in the XML
        of a listing, a copy or a completed multipart upload (never in an object's own bytes)."""
        if rules.require_encryption != "aws:kms":
            return reply
        _, key = bucket_and_key(environ.get("PATH_INFO", ""))
        method = environ.get("REQUEST_METHOD", "")
        xml = not key or method == "POST" or "HTTP_X_AMZ_COPY_SOURCE" in environ
        status, headers, body = reply
        out = []
        for name, value in headers:
            if name.lower() == "etag":
                match = _ETAG_HEADER.match(value)
                if match:
                    value = f'"{self._stand_in(match.group(1))}{match.group(2) or ""}"'
            out.append((name, value))

        def swap(found: re.Match) -> bytes:
            quote_open, md5, suffix, quote_close = found.groups()
            stand_in = self._stand_in(md5.decode()).encode()
            return b"<ETag>" + (quote_open or b"") + stand_in + (suffix or b"") + (quote_close or b"") + b"</ETag>"

        if xml and b"<ETag>" in body:
            body = _ETAG_XML.sub(swap, body)
            out = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in out]
        return status, out, body

    def _stand_in(self, md5: str) -> str:
        stand_in = kms_etag(md5)
        with self._lock:
            self._real_etag[stand_in] = md5
        return stand_in
