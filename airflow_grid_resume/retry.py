"""How a try that ended without success is retried: interruptions promptly, failures as the user said.

Both kinds of try end "up for retry" (one Airflow try is one spot session), so Airflow's own retry
machinery has to tell them apart. The exceptions carry the kind; ``InterruptionRetryPolicy``
(Airflow 3.3's ``retry_policy``) gives an interruption its own short delay and leaves a script
failure to the user's ``retry_delay`` or their own policy. Budgets are enforced by the operator
from the ledger's outcomes, never by counting Airflow tries.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import RetryDecision, RetryPolicy
from airflow.sdk.exceptions import AirflowException


class SessionInterrupted(SystemExit):
    """The spot instance was reclaimed (or lost): retry, resuming from the last checkpoint.

    A ``SystemExit``, not an ``AirflowException``: Airflow 3.3's task runner logs every exception
    with ``log.exception("Task failed with exception")`` and its traceback, except ``SystemExit``,
    which gets one line (``Task exited`` with the message) and still goes through the retry policy
    and the retry budget. An interruption is routine on spot; its try log should say so in a line.
    """


class ScriptFailed(AirflowException):
    """The training command itself failed: retry while the task's retries allow."""


class InterruptionRetryPolicy(RetryPolicy):
    """Retry an interrupted session after ``delay``; defer everything else to ``inner`` (or Airflow).

    The policy object is never serialized (the scheduler only sees the delay it decided), so it may
    hold the user's own policy.
    """

    def __init__(self, delay: timedelta, inner: RetryPolicy | None = None) -> None:
        self.delay = delay
        self.inner = inner

    def evaluate(self, exception: BaseException, try_number: int, max_tries: int, context: Any = None) -> RetryDecision:
        if isinstance(exception, SessionInterrupted):
            return RetryDecision.retry(delay=self.delay, reason=f"spot interruption: {exception}"[:500])
        if self.inner is not None:
            return self.inner.evaluate(exception, try_number, max_tries, context)
        return RetryDecision.default()
