"""Batched DescribeInstances: the run triggers of one event loop share one call per interval.

EC2's Describe* budget is per account (100 burst, 20 per second); 500 triggers describing their
own instance every 30 s would spend it for nothing. Requests that arrive within ``window`` seconds
are answered by one DescribeInstances for all their ids (100 per call: parsing 500 instances at once
held the event loop for about 100 ms).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from botocore.exceptions import ClientError


class DescribeBatcher:
    def __init__(self, window: float = 0.5, max_ids: int = 100) -> None:
        self.window = window
        self.max_ids = max_ids
        self._pending: dict[str, list[asyncio.Future]] = {}
        self._flush: asyncio.Task | None = None
        self.calls = 0

    async def state(self, client: Any, instance_id: str) -> dict | None:
        """The instance as DescribeInstances shows it, or None if EC2 no longer knows it."""
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(instance_id, []).append(future)
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._run(client))
        return await future

    async def _run(self, client: Any) -> None:
        # Requests that arrive while a call is in flight find this task not done and start none:
        # serve them in the next round, or a watch would wait for its answer until some other
        # trigger happened to ask (forever for the last one left).
        while self._pending:
            await asyncio.sleep(self.window)
            pending, self._pending = self._pending, {}
            await self._describe(client, pending)

    async def _describe(self, client: Any, pending: dict[str, list[asyncio.Future]]) -> None:
        ids = list(pending)
        for start in range(0, len(ids), self.max_ids):
            batch = ids[start : start + self.max_ids]
            found: dict[str, dict] = {}
            error: Exception | None = None
            try:
                self.calls += 1
                response = await client.describe_instances(InstanceIds=batch)
                found = {i["InstanceId"]: i for r in response["Reservations"] for i in r["Instances"]}
            except ClientError as exc:
                if "InvalidInstanceID" in str(exc):
                    found = await self._one_by_one(client, batch)
                else:
                    error = exc
            except Exception as exc:
                error = exc
            for instance_id in batch:
                for future in pending[instance_id]:
                    if future.done():
                        continue
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(found.get(instance_id))

    async def _one_by_one(self, client: Any, ids: list[str]) -> dict[str, dict]:
        """One unknown id fails the whole call; fall back to asking for each id alone."""
        found = {}
        for instance_id in ids:
            try:
                self.calls += 1
                response = await client.describe_instances(InstanceIds=[instance_id])
            except ClientError:
                continue
            for r in response["Reservations"]:
                for i in r["Instances"]:
                    found[i["InstanceId"]] = i
        return found


_BATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple, DescribeBatcher]] = (
    weakref.WeakKeyDictionary()
)


def describe_batcher(aws_conn_id: str | None, region: str | None) -> DescribeBatcher:
    batchers = _BATCHERS.setdefault(asyncio.get_running_loop(), {})
    return batchers.setdefault((aws_conn_id, region), DescribeBatcher())
