"""What every write to the run's bucket carries for the bucket's security rules: server-side
encryption (``AES256``, or ``aws:kms`` with an optional key) and a flexible checksum.

One place for both sides: the operator validates the options, writes them to ``spec.json``
(``s3_write``) and every Airflow-side writer sends them; the bootstrap and the agent read them from
there (the agent as ``--s3-write JSON``). A bucket policy that denies PutObject without
``x-amz-server-side-encryption`` (a common organisation rule) refuses every write without them, and a
bucket with Object Lock default retention refuses a PutObject without Content-MD5 or an
``x-amz-checksum-*`` header; our clients otherwise compute request checksums only where S3 requires
them (``ledger/s3client.py``), because every object already carries our own sha256.

Standard library only (the agent's zipapp runs it on the instance's python3, 3.9 or newer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any

ENCRYPTIONS = ("AES256", "aws:kms")
CHECKSUMS = ("CRC32", "SHA256")
# The words of the refusals that these options cure, as S3 answers them (and the local spot cloud copies).
OBJECT_LOCK_REFUSAL = "Content-MD5 OR x-amz-checksum- HTTP header is required"


@dataclass(frozen=True)
class S3WriteOptions:
    """``encryption``: None (the bucket's default), ``AES256`` or ``aws:kms``; ``kms_key_id``: the
    KMS key for ``aws:kms`` (None: the account's ``aws/s3`` key); ``checksum``: None (none sent) or
    the flexible checksum every upload carries (``CRC32``, ``SHA256``)."""

    encryption: str | None = None
    kms_key_id: str | None = None
    checksum: str | None = None

    def __post_init__(self) -> None:
        if self.encryption is not None and self.encryption not in ENCRYPTIONS:
            raise ValueError(
                f"s3_encryption must be one of {', '.join(ENCRYPTIONS)} or None (the bucket's default), "
                f"got {self.encryption!r}"
            )
        if self.kms_key_id is not None:
            if self.encryption != "aws:kms":
                raise ValueError(
                    f"s3_kms_key_id is only used with s3_encryption='aws:kms' (s3_encryption is {self.encryption!r})"
                )
            if not isinstance(self.kms_key_id, str) or not self.kms_key_id.strip():
                raise ValueError(f"s3_kms_key_id must be a key id, alias or ARN, got {self.kms_key_id!r}")
        if self.checksum is not None and self.checksum not in CHECKSUMS:
            raise ValueError(
                f"s3_checksum must be one of {', '.join(CHECKSUMS)} or None (no checksum header), got {self.checksum!r}"
            )

    @property
    def empty(self) -> bool:
        return self.encryption is None and self.checksum is None

    # -- plain JSON (spec.json's ``s3_write``, the agent's ``--s3-write``, a trigger's kwargs) --------
    def to_json(self) -> dict[str, str] | None:
        """The options as a plain dict, None when there are none (so older readers see nothing new)."""
        if self.empty:
            return None
        doc = {"encryption": self.encryption, "kms_key_id": self.kms_key_id, "checksum": self.checksum}
        return {k: v for k, v in doc.items() if v is not None}

    @classmethod
    def from_json(cls, doc: Any) -> S3WriteOptions:
        """From :meth:`to_json`'s dict (or its JSON text); None or ``{}``: no options."""
        if isinstance(doc, str):
            doc = json.loads(doc) if doc.strip() else None
        if doc is None:
            return cls()
        if not isinstance(doc, dict):
            raise ValueError(f"S3 write options must be a JSON object, got {doc!r}")
        unknown = sorted(set(doc) - {"encryption", "kms_key_id", "checksum"})
        if unknown:
            raise ValueError(f"unknown S3 write options {unknown} (known: encryption, kms_key_id, checksum)")
        return cls(doc.get("encryption"), doc.get("kms_key_id"), doc.get("checksum"))

    # -- boto3 parameters -------------------------------------------------------------------------
    def encryption_kwargs(self) -> dict[str, str]:
        """PutObject/CopyObject/CreateMultipartUpload parameters for the encryption."""
        out: dict[str, str] = {}
        if self.encryption:
            out["ServerSideEncryption"] = self.encryption
        if self.kms_key_id:
            out["SSEKMSKeyId"] = self.kms_key_id
        return out

    def put_kwargs(self) -> dict[str, str]:
        """PutObject parameters: the encryption and, with a checksum, ``ChecksumAlgorithm`` (botocore
        then computes and sends ``x-amz-checksum-*`` even with ``request_checksum_calculation=when_required``)."""
        out = self.encryption_kwargs()
        if self.checksum:
            out["ChecksumAlgorithm"] = self.checksum
        return out

    # -- raw headers (requests signed by ourselves: asyncaws/fastobjects.py) ----------------------
    def headers(self, body: bytes) -> dict[str, str]:
        """The headers of a PutObject of ``body`` signed outside botocore (all of them are signed)."""
        out: dict[str, str] = {}
        if self.encryption:
            out["x-amz-server-side-encryption"] = self.encryption
        if self.kms_key_id:
            out["x-amz-server-side-encryption-aws-kms-key-id"] = self.kms_key_id
        if self.checksum:
            out["x-amz-checksum-" + self.checksum.lower()] = checksum_value(self.checksum, body)
        return out


def checksum_value(algorithm: str, body: bytes) -> str:
    """The base64 value S3 expects in ``x-amz-checksum-<algorithm>`` (big-endian for CRC32)."""
    if algorithm == "CRC32":
        raw = (zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")
    elif algorithm == "SHA256":
        raw = hashlib.sha256(body).digest()
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    return base64.b64encode(raw).decode()


def explain_write_refusal(code: str, message: str, options: S3WriteOptions) -> str | None:
    """What to set when the bucket refused a write for want of these options (None: not that)."""
    if code == "InvalidRequest" and OBJECT_LOCK_REFUSAL in message and options.checksum is None:
        return (
            "the bucket has Object Lock default retention and refuses uploads without a checksum: "
            "set s3_checksum='CRC32' (or 'SHA256') on the operator"
        )
    if code in ("AccessDenied", "403") and options.encryption is None:
        return (
            "the bucket refused a write; if its policy requires server-side encryption, set "
            "s3_encryption='aws:kms' (with s3_kms_key_id if it names a key) or s3_encryption='AES256' on the operator"
        )
    return None
