"""Keep botocore's routine credential notices out of task and trigger logs.

botocore logs "Found credentials in environment variables." (INFO, logger ``botocore.credentials``;
aiobotocore the same under ``aiobotocore.credentials``) whenever a client is created; Airflow's task
and trigger logs record INFO, so every try's log carried it. Warnings and errors still show.
Deployments can do the same with ``[logging] namespace_levels``.
"""

from __future__ import annotations

import logging

NOISY = ("botocore.credentials", "aiobotocore.credentials")


def quiet_credential_logs() -> None:
    """Raise the credential loggers to WARNING (in the calling process; call before creating clients)."""
    for name in NOISY:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
