"""A small JSON document that several writers update at once (the fleet record, a task's pace record): read it
with its ETag, merge, and put it back with ``If-Match`` (``If-None-Match: *`` when there is none yet). S3 answers
412 (409 when two conditional writes race) to the loser, which reads again and merges again, with a jittered wait.
Such documents are conveniences: a failure is logged and dropped, never raised."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from airflow_grid_resume.ledger.s3client import is_not_found, is_precondition_failed

log = logging.getLogger(__name__)


def read_json(client: Any, bucket: str, key: str) -> tuple[dict | None, str | None]:
    """The document and its ETag; (None, None) when there is none yet. Raises on any other failure."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_not_found(exc):
            return None, None
        raise
    return dict(json.loads(response["Body"].read())), str(response["ETag"])


def update_json(
    client: Any,
    bucket: str,
    key: str,
    merge: Callable[[dict | None], dict | None],
    *,
    what: str,
    put_kwargs: dict[str, Any] | None = None,
    tries: int = 12,
    rng: random.Random | None = None,
) -> dict | None:
    """Put ``merge(current)`` in place of the current document, conditionally, retrying lost races; the document
    written, or None (``merge`` returned None: nothing to write; or it could not be written: logged, naming
    ``what``)."""
    rng = rng or random.Random()
    for attempt in range(tries):
        try:
            current, etag = read_json(client, bucket, key)
            merged = merge(current)
            if merged is None:
                return None
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            body = json.dumps(merged, separators=(",", ":"), sort_keys=True).encode()
            client.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType="application/json", **condition, **(put_kwargs or {})
            )
            return merged
        except ClientError as exc:
            if not is_precondition_failed(exc):
                log.warning("could not update %s s3://%s/%s: %s", what, bucket, key, exc)
                return None
        except (BotoCoreError, ValueError) as exc:
            log.warning("could not update %s s3://%s/%s: %s", what, bucket, key, exc)
            return None
        time.sleep(rng.uniform(0, min(2.0, 0.05 * 2**attempt)))  # apart from the winner, not in step with it
    log.warning("gave up updating %s s3://%s/%s after %d conflicting writes", what, bucket, key, tries)
    return None


__all__ = ["read_json", "update_json"]
