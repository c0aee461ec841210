"""One aiobotocore client per (event loop, connection, region), shared by the triggers using it.

Creating a client loads the service model (megabytes of JSON) on the event loop: 200 triggers each
creating their own stalled a triggerer's loop for seconds. Triggers acquire the shared client and
release it when they end; the last one out closes it, so nothing outlives its users.
"""

from __future__ import annotations

import asyncio
import gc
import platform
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import botocore
import botocore.session
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.hooks.sqs import SqsHook
from botocore.config import Config
from botocore.useragent import sanitize_user_agent_string_component
from botocore.utils import parse_timestamp
from dateutil.tz import tzutc

from airflow_grid_resume import __version__
from airflow_grid_resume.quiet import quiet_credential_logs

# One shared client serves every run watch of a triggerer: 500 watches make several hundred calls a second.
# botocore's default pool of 10 connections queues them behind each other (seen in
# benchmarks/watch_bench.py); a connection is cheap, a request waiting for one is latency.
SHARED_POOL_CONNECTIONS = 64
# A triggerer runs at most [triggerer] capacity (1,000 by default) watches, each with one long poll.
LONG_POLL_POOL_CONNECTIONS = 2048


class _Entry:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.client: Any = None
        self.context: Any = None
        self.users = 0


_ENTRIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, _Entry]] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def shared_client(hook: AwsBaseHook, key: tuple) -> AsyncIterator[Any]:
    """``async with shared_client(hook, (conn_id, region)) as client``: one client per key and loop."""
    entries = _ENTRIES.setdefault(asyncio.get_running_loop(), {})
    entry = entries.setdefault(key, _Entry())
    async with entry.lock:
        if entry.client is None:
            quiet_credential_logs()
            entry.context = await hook.get_async_conn()
            entry.client = await entry.context.__aenter__()
            use_fast_timestamps(entry.client)
            _freeze_long_lived(key)
        entry.users += 1
    try:
        yield entry.client
    finally:
        async with entry.lock:
            entry.users -= 1
            if entry.users == 0 and entry.client is not None:
                context, entry.client, entry.context = entry.context, None, None
                await context.__aexit__(None, None, None)


_FROZEN: set[tuple] = set()


def _freeze_long_lived(key: tuple) -> None:
    """Move what exists now (Airflow, botocore's service models just loaded) out of the collector's scans.

    In a triggerer running 500 run watches, each full collection walked that whole heap and stopped
    the event loop for 100-160 ms, about every 5 s: the loop lag's p99 (benchmarks/watch_bench.py).
    ``gc.freeze()`` is cheap (no scan), frees nothing, and is done at most once per client key, so
    the few cyclic leftovers it keeps are bounded.
    """
    if key not in _FROZEN:
        _FROZEN.add(key)
        gc.freeze()


class SharedS3Hook(S3Hook):
    """``S3Hook`` whose client is sized to be shared by many triggers.

    The connection's own botocore config is kept; only a pool smaller than
    ``SHARED_POOL_CONNECTIONS`` is widened, response checksums are validated only where S3
    requires it (the ledger's small JSON and log reads do not need a CRC pass each; the agent's own
    client does the same), and the User-Agent is a fixed string (``Config(user_agent=...)``, with
    Airflow's ``user_agent_extra`` appended as usual), each unless the connection sets its own.
    botocore otherwise rebuilds its User-Agent from a dozen components twice per request: a sixth
    of the CPU of each GetObject in a triggerer watching 1,000 runs (benchmarks/watch_bench.py).
    """

    def _get_config(self, config: Config | None = None) -> Config:
        return shared_config(super()._get_config(config), SHARED_POOL_CONNECTIONS)


class SharedSqsHook(SqsHook):
    """``SqsHook`` whose client is shared by every run watch of a triggerer, as ``SharedS3Hook``. Each
    watch holds a long poll open most of the time: the pool has room for one per watch."""

    def _get_config(self, config: Config | None = None) -> Config:
        return shared_config(super()._get_config(config), LONG_POLL_POOL_CONNECTIONS)


def shared_config(config: Config, pool: int) -> Config:
    """``config`` with a pool of at least ``pool`` connections, response checksums validated only
    where required, and a fixed User-Agent, each unless the connection sets its own."""
    extra: dict[str, Any] = {}
    if (config.max_pool_connections or 0) < pool:
        extra["max_pool_connections"] = pool
    if getattr(config, "response_checksum_validation", None) is None:
        extra["response_checksum_validation"] = "when_required"
    if config.user_agent is None:  # botocore leaves the app id out of a set User-Agent: it goes in here
        appid = config.user_agent_appid or botocore.session.Session().get_config_variable("user_agent_appid")
        extra["user_agent"] = fixed_user_agent(appid)
    return config.merge(Config(**extra)) if extra else config


def fixed_user_agent(appid: str | None = None) -> str:
    """What the shared clients send as User-Agent: this provider, botocore and Python, by version, and
    the user's app id (``AWS_SDK_UA_APP_ID``, ``sdk_ua_app_id``, ``user_agent_appid``) as botocore puts it."""
    fixed = f"airflow-grid-resume/{__version__} Botocore/{botocore.__version__} Python/{platform.python_version()}"
    return f"{fixed} app/{sanitize_user_agent_string_component(appid, allow_hash=True)}" if appid else fixed


_UTC = tzutc()


def fast_timestamp(value: Any) -> datetime:
    """botocore's ``parse_timestamp`` for the two forms AWS sends, without dateutil's parser.

    ``2026-11-25T11:00:00.000Z`` (XML bodies) and ``Wed, 25 Nov 2026 11:00:00 GMT`` (headers such as
    Last-Modified) give the same tz-aware datetime as botocore's; anything else goes to botocore.
    dateutil's generic parser was a tenth of the CPU of each GetObject and ListObjectsV2 of a run
    watch (benchmarks/watch_bench.py).
    """
    if isinstance(value, str):
        try:
            if value.endswith("Z") and "T" in value:
                return datetime.fromisoformat(value[:-1]).replace(tzinfo=_UTC)
            if value.endswith(" GMT"):
                return datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=_UTC)
        except ValueError:
            pass
    return parse_timestamp(value)


def use_fast_timestamps(client: Any) -> None:
    """Make a client parse timestamps with ``fast_timestamp`` (botocore's documented parser default).

    botocore builds a parser per response from the endpoint's ``ResponseParserFactory``; its
    ``set_parser_defaults(timestamp_parser=...)`` is the supported switch. Left alone if botocore
    ever moves it.
    """
    factory = getattr(getattr(client, "_endpoint", None), "_response_parser_factory", None)
    if factory is not None and hasattr(factory, "set_parser_defaults"):
        factory.set_parser_defaults(timestamp_parser=fast_timestamp)
