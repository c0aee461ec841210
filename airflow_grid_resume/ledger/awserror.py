"""What an AWS error answer says, read from botocore's ClientError: one reading for every caller.

Both sides compare these codes (the agent's S3 and SQS calls, the Airflow side's hooks), so they parse them in one
place. SQS's JSON protocol answers with a ``Code`` and, for the same error, its older query-protocol code in
``QueryErrorCode``: :func:`error_codes` gives both.
"""

from __future__ import annotations

from botocore.exceptions import ClientError


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def error_codes(exc: BaseException) -> set[str]:
    """Every code the answer gives (``Code`` and SQS's ``QueryErrorCode``); empty for anything but a ClientError."""
    if not isinstance(exc, ClientError):
        return set()
    err = exc.response.get("Error", {})
    return {str(code) for code in (err.get("Code"), err.get("QueryErrorCode")) if code}


def error_message(exc: BaseException) -> str:
    """The answer's message ('' when it gave none)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Message", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The answer's HTTP status (0 when there was no answer)."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0
