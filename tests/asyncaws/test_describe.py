"""asyncaws/describe.py: batched DescribeInstances. Pure: no server."""

from __future__ import annotations


def test_describe_batcher_answers_requests_made_while_a_call_is_in_flight() -> None:
    import asyncio

    from airflow_grid_resume.asyncaws.describe import DescribeBatcher

    class SlowEC2:
        def __init__(self) -> None:
            self.calls: list[list[str]] = []
            self.gate = asyncio.Event()

        async def describe_instances(self, Filters: list[dict]) -> dict:
            ids = Filters[0]["Values"]
            self.calls.append(list(ids))
            await self.gate.wait()
            return {"Reservations": [{"Instances": [{"InstanceId": i, "State": {"Name": "running"}}]} for i in ids]}

    async def scenario() -> None:
        ec2, batcher = SlowEC2(), DescribeBatcher(window=0.01, max_ids=2)
        first = [asyncio.create_task(batcher.state(ec2, i)) for i in ("i-1", "i-2", "i-3")]
        while not ec2.calls:
            await asyncio.sleep(0.005)
        late = asyncio.create_task(batcher.state(ec2, "i-4"))  # arrives while the first call is in flight
        ec2.gate.set()
        results = await asyncio.wait_for(asyncio.gather(*first, late), timeout=5)
        assert [r["InstanceId"] for r in results] == ["i-1", "i-2", "i-3", "i-4"]
        assert ec2.calls == [["i-1", "i-2"], ["i-3"], ["i-4"]]  # at most max_ids per call

    asyncio.run(scenario())
