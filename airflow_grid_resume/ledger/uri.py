"""Parsing of ``s3://bucket/prefix`` run URIs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_grid_resume.ledger.errors import UsageError

# S3 bucket naming rules, simplified: 3-63 chars of lowercase letters, digits, dots and hyphens.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix without leading or trailing slashes."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """Join ``parts`` under the prefix."""
        tail = "/".join(p.strip("/") for p in parts if p)
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_uri(uri: str, *, what: str = "--run-uri") -> S3Location:
    """Parse ``s3://bucket[/prefix]`` and say exactly what is wrong when it is not one."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise UsageError(f"{what} must look like s3://BUCKET/PREFIX, got {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise UsageError(
            f"{what} has an invalid bucket name {bucket!r} in {uri!r}: "
            "bucket names are 3-63 lowercase letters, digits, dots or hyphens"
        )
    prefix = prefix.strip("/")
    if "//" in prefix or any(p in (".", "..") for p in prefix.split("/")):
        raise UsageError(f"{what} has an invalid prefix {prefix!r} in {uri!r}: no empty, '.' or '..' parts")
    return S3Location(bucket=bucket, prefix=prefix)
