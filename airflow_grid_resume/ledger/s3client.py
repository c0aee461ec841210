"""The boto3 S3 client the agent uses, and the translation of its errors into actionable ones."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from airflow_grid_resume.ledger.awserror import error_code, http_status
from airflow_grid_resume.ledger.errors import LedgerUnavailableError

# botocore's "standard" retry mode retries throttling (SlowDown, RequestLimitExceeded, ...),
# 500/502/503/504 and connection errors with exponential backoff and jitter.
DEFAULT_MAX_ATTEMPTS = 10


def make_s3_client(
    *, parallelism: int = 16, region: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> Any:
    """An S3 client from the standard credential chain (``AWS_ENDPOINT_URL`` included).

    Checksums are ours (sha256 of every object), so botocore's own CRC is only computed where
    S3 requires it; this saves a pass over every byte uploaded.
    """
    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max(10, parallelism + 4),
        connect_timeout=5,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session(region_name=region).client("s3", config=config)


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in ("NoSuchKey", "404", "NotFound") or http_status(exc) == 404


def is_precondition_failed(exc: BaseException) -> bool:
    """A conditional write lost: 412, or 409 when another conditional write raced it."""
    return error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or http_status(exc) in (409, 412)


def explain_access_error(exc: BaseException, bucket: str) -> LedgerUnavailableError:
    """Turn a failure to reach the ledger into a message that says what to fix."""
    code = error_code(exc)
    if isinstance(exc, NoCredentialsError):
        return LedgerUnavailableError(
            "no AWS credentials found: on EC2 attach an instance profile that can read and write "
            f"s3://{bucket}; elsewhere set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if code in ("NoSuchBucket", "404", "NotFound"):
        return LedgerUnavailableError(f"bucket {bucket!r} does not exist (check --run-uri and the region)")
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return LedgerUnavailableError(
            f"access to bucket {bucket!r} was denied ({code}): the credentials need s3:GetObject, "
            "s3:PutObject and s3:ListBucket on the run prefix"
        )
    if isinstance(exc, (BotoCoreError, ClientError)):
        return LedgerUnavailableError(f"cannot reach the run ledger in bucket {bucket!r}: {exc}")
    return LedgerUnavailableError(f"unexpected error reaching bucket {bucket!r}: {exc!r}")
