"""What every hook of this provider shares: which AWS answers are worth asking again, the retries themselves
(sync and async twins), and an async client of any AWS hook for one ``async with``.

Which error codes mean throttling or a transient server error is one table (``ec2.launch.classify_error``);
``NO_ANSWER`` is botocore's "no answer at all" (refused, reset, read timeout), after which the request may or may
not have been carried out.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from airflow_grid_resume.ec2.launch import THROTTLE, TRANSIENT, classify_error
from airflow_grid_resume.ledger.awserror import error_code

T = TypeVar("T")
# No answer at all (refused, reset, read timeout): for a launch, EC2 may have carried it out.
NO_ANSWER = (HTTPClientError, BotoConnectionError)


def retryable(exc: Exception) -> bool:
    """Throttling, EC2's 5xx codes and lost answers: worth the same request again after a backoff."""
    if isinstance(exc, ClientError):
        return classify_error(error_code(exc) or "Unknown") in (THROTTLE, TRANSIENT)
    return isinstance(exc, NO_ANSWER)


def retry_delay(attempt: int, base: float = 0.5, cap: float = 8.0) -> float:
    """Full jitter: many triggers throttled at once do not retry in step."""
    return random.uniform(0, min(cap, base * 2**attempt))


def call_with_retries(fn: Callable[[], T], attempts: int = 6) -> T:
    """``fn()`` retried on throttling, 5xx and lost answers (reads and idempotent writes only)."""
    for attempt in range(attempts):
        try:
            return fn()
        except (ClientError, *NO_ANSWER) as exc:
            if attempt == attempts - 1 or not retryable(exc):
                raise
            time.sleep(retry_delay(attempt))
    raise AssertionError("unreachable")


async def a_call_with_retries(fn: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
    """The async twin of :func:`call_with_retries`."""
    for attempt in range(attempts):
        try:
            return await fn()
        except (ClientError, *NO_ANSWER) as exc:
            if attempt == attempts - 1 or not retryable(exc):
                raise
            await asyncio.sleep(retry_delay(attempt))
    raise AssertionError("unreachable")


def hook_client(hook: AwsBaseHook, client: Any = None) -> Any:
    """``async with hook_client(hook) as client``: a fresh aiobotocore client of any AWS hook, closed after."""
    return _client(hook, client)


class _client:
    """``async with`` over a caller's long-lived client (left open) or a fresh one (closed)."""

    def __init__(self, hook: AwsBaseHook, client: Any) -> None:
        self.hook, self.client = hook, client
        self._cm: Any = None

    async def __aenter__(self) -> Any:
        if self.client is not None:
            return self.client
        self._cm = await self.hook.get_async_conn()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(*exc)
