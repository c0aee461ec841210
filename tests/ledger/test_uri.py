"""ledger/uri.py: run URIs, and errors that say what to fix. Pure: no server."""

from __future__ import annotations

import pytest

from airflow_grid_resume.ledger.errors import UsageError
from airflow_grid_resume.ledger.uri import parse_s3_uri


def test_uri_errors_say_what_to_fix() -> None:
    assert parse_s3_uri("s3://my-bucket/a/b/").prefix == "a/b"
    for bad in ("http://x/y", "s3://", "s3://UPPER/x", "s3://b/../x"):
        with pytest.raises(UsageError, match="--run-uri"):
            parse_s3_uri(bad)
