"""The watch's copy of its output in the remote log, written through Airflow's own S3 remote log IO (to moto's
server over HTTP) and read back the way the api-server reads a try's remote log."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest
from airflow.providers.amazon.aws.log.s3_task_handler import S3RemoteLogIO
from airflow.utils.log.file_task_handler import StructuredLogMessage

from airflow_grid_resume.watch.remotecopy import RemoteLogCopy, copy_location, log_line

TRY_LOG = "dag_id=d/run_id=r/task_id=train/attempt=2.log"


def test_a_line_is_one_that_airflow_parses_with_its_time() -> None:
    at = datetime(2026, 12, 7, 6, 1, 2, 345678, tzinfo=timezone.utc)
    parsed = StructuredLogMessage.model_validate_json(log_line('step 5 "ok"\nstep 6', at))
    assert parsed.event == 'step 5 "ok"\nstep 6'
    assert parsed.timestamp == at


def test_the_copy_sits_under_the_try_log_path_where_the_remote_reader_lists() -> None:
    where = copy_location("s3://logs/airflow/", TRY_LOG, 3, "ab12cd34", 1)
    assert where == f"s3://logs/airflow/{TRY_LOG}.trigger.watch-session3-ab12cd34-0001.log"


@pytest.fixture
def remote_io(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> S3RemoteLogIO:
    """Airflow's S3 remote log IO on the test's bucket, through a connection as a deployment sets it."""
    monkeypatch.setenv("AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID", "remote_logs")
    monkeypatch.setenv("AIRFLOW_CONN_REMOTE_LOGS", "aws://")
    return S3RemoteLogIO(remote_base=f"s3://{bucket}/airflow", base_log_folder=tmp_path, delete_local_copy=False)


def test_saved_parts_are_read_with_the_try_log_and_discarded_whole(remote_io: S3RemoteLogIO, bucket: str) -> None:
    copy = RemoteLogCopy(remote_io, TRY_LOG, session=2, part_bytes=300)
    for n in range(1, 4):
        copy.add(f"step {n}")
    first = copy.location()
    asyncio.run(copy.save())
    assert copy.location() != first  # full: the next lines go to the next part
    for n in range(4, 6):  # the part passed 300 bytes: these go to the next part
        copy.add(f"step {n}")
    asyncio.run(copy.save())
    asyncio.run(copy.save())  # nothing new: no write
    assert copy.written[0] == first and len(copy.written) == 2

    keys, texts = remote_io.read(TRY_LOG, None)
    assert keys == sorted(copy.written)
    events = [StructuredLogMessage.model_validate_json(line).event for t in texts for line in t.splitlines()]
    assert events == [f"step {n}" for n in range(1, 6)]

    asyncio.run(copy.discard())
    assert boto3.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount") == 0
