"""The run watch's GetObject and PutObject fast path, against moto's server and a fault proxy in front of it."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.fastobjects import FastObjects
from airflow_grid_resume.emulator.faultproxy import FaultProxy, FaultRule
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions


def with_getter(scenario: Callable[[FastObjects, Any], Any]) -> Any:
    """Run ``scenario(getter, client)`` with the triggers' shared S3 client (AWS_ENDPOINT_URL: moto or a proxy)."""
    from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client

    async def go() -> Any:
        async with shared_client(
            SharedS3Hook(aws_conn_id=None), ("s3", None, os.environ["AWS_ENDPOINT_URL"])
        ) as client:
            return await scenario(FastObjects(client), client)

    return asyncio.run(go())


def botocore_calls(client: Any) -> list[str]:
    """The operations ``client`` makes through botocore's generic path from now on (the list grows)."""
    generic = client._make_api_call
    calls: list[str] = []

    def counted(operation: str, params: dict) -> Any:
        calls.append(operation)
        return generic(operation, params)

    client._make_api_call = counted
    return calls


@pytest.fixture
def objects(aws_env: dict[str, str], bucket: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    found = {"a/chunk-000000": b"line 1\nline 2\n", "odd key/+&=é~.json": b'{"x": 1}'}
    for key, body in found.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    return found


def test_reads_what_botocore_reads_and_none_for_a_missing_key(moto, bucket: str, objects: dict) -> None:
    async def scenario(getter: FastObjects, client: Any) -> list:
        through_botocore = botocore_calls(client)
        fast = {key: await getter.get(bucket, key) for key in objects}
        missing = await getter.get(bucket, "a/chunk-000099")
        ranged = await getter.get(bucket, "a/chunk-000000", "bytes=7-")
        assert through_botocore == [], "the fast path fell back to botocore"
        out = []
        for key in objects:
            slow = await client.get_object(Bucket=bucket, Key=key)
            async with slow["Body"] as body:
                out.append((key, fast[key], await body.read(), slow))
        return [*out, ("missing", missing, None, None), ("range", ranged, None, None)]

    results = with_getter(scenario)
    for key, fast, data, slow in results[:2]:
        assert fast.data == data == objects[key], key
        assert fast.etag == slow["ETag"] and fast.last_modified == slow["LastModified"], key
        assert fast.date  # S3's clock, for the age of a chunk
    assert results[2][1] is None
    assert results[3][1].data == b"line 2\n"


def test_a_missing_bucket_raises_as_botocore_does(moto, aws_env: dict[str, str]) -> None:
    async def scenario(getter: FastObjects, client: Any) -> None:
        await getter.get("no-such-bucket-here", "k")

    with pytest.raises(ClientError) as err:
        with_getter(scenario)
    assert err.value.response["Error"]["Code"] == "NoSuchBucket"


def read_through(proxy: FaultProxy, rule: FaultRule, bucket: str, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """One read of the chunk through ``proxy`` failing as ``rule`` says: (the read, whether the bucket went slow)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
    proxy.add_rule(rule)

    async def scenario(getter: FastObjects, client: Any) -> tuple:
        return await getter.get(bucket, "a/chunk-000000"), bucket in getter._slow

    return with_getter(scenario)


@pytest.mark.parametrize("status", [503, 500])
def test_throttling_and_5xx_are_retried_through_botocore(
    moto, bucket: str, objects: dict, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = FaultRule(status=status, rate=1.0, method="GET", limit=2)
    with FaultProxy(moto.endpoint_url) as proxy:
        read, slow = read_through(proxy, rule, bucket, monkeypatch)
    assert read is not None and read.data == objects["a/chunk-000000"] and not slow
    assert rule.hits == 2  # the fast path's answer and botocore's first attempt failed; its retry did not


def test_a_lost_answer_is_asked_again(moto, bucket: str, objects: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    rule = FaultRule(drop=True, rate=1.0, method="GET", limit=1)
    with FaultProxy(moto.endpoint_url) as proxy:
        read, slow = read_through(proxy, rule, bucket, monkeypatch)
    assert read is not None and read.data == objects["a/chunk-000000"] and rule.hits == 1 and not slow


def test_a_bucket_reached_the_wrong_way_goes_through_botocore_from_then_on(
    moto, bucket: str, objects: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    rule = FaultRule(status=403, rate=1.0, method="GET", limit=1)
    with FaultProxy(moto.endpoint_url) as proxy:
        read, slow = read_through(proxy, rule, bucket, monkeypatch)
    assert read is not None and read.data == objects["a/chunk-000000"] and rule.hits == 1 and slow


def test_a_server_that_checks_signatures_accepts_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto checks SigV4 signatures once INITIAL_NO_AUTH_ACTION_COUNT actions have passed: a signature it
    does not recompute to the same value is a 403, which would send every read through botocore."""
    from airflow_grid_resume.emulator.moto_server import MotoServer

    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "3")
    with MotoServer() as server:
        for name, value in {
            "AWS_ENDPOINT_URL": server.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        iam = boto3.client("iam")
        iam.create_user(UserName="watch")
        key = iam.create_access_key(UserName="watch")["AccessKey"]
        policy = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}'
        iam.put_user_policy(UserName="watch", PolicyName="s3", PolicyDocument=policy)  # the third: checked from here
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        s3 = boto3.client("s3", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="signed")
        objects = {"runs/r/sessions/1/log/0000000000000000": b"line 1\nline 2\n", "odd key/+&=é~.json": b"{}"}
        for name, body in objects.items():
            s3.put_object(Bucket="signed", Key=name, Body=body)

        async def scenario(getter: FastObjects, client: Any) -> list:
            answers = [await getter._fast("signed", name, None) for name in objects]
            answers.append(await getter._fast("signed", "runs/r/sessions/1/log/0000000000000000", "bytes=7-"))
            answers.append(await getter._fast("signed", "runs/r/missing", None))
            answers.append(
                (await getter._fast_put("signed", "runs/r/sessions/1/watch.json", b'{"log_offset":7}'), None)
            )
            answers.append(await getter._fast("signed", "runs/r/sessions/1/watch.json", None))
            getter.write_options = S3WriteOptions("aws:kms", "alias/k", "CRC32")  # its headers are signed too
            answers.append((await getter._fast_put("signed", "runs/r/sessions/1/watch.json", b"{}"), None))
            getter._sender.credentials = type(getter._sender.credentials)(key["AccessKeyId"], "not-the-secret")
            answers.append(await getter._fast("signed", "odd key/+&=é~.json", None))
            return answers

        answers = with_getter(scenario)
    assert [(status, read.data if read else None) for status, read in answers] == [
        (200, b"line 1\nline 2\n"),
        (200, b"{}"),
        (206, b"line 2\n"),
        (404, None),
        (200, None),  # the PUT
        (200, b'{"log_offset":7}'),
        (200, None),  # the PUT with encryption and checksum headers
        (403, None),  # the same request signed with a wrong secret: the server does check
    ]


def test_a_put_overwrites_without_botocore(moto, bucket: str, objects: dict) -> None:
    async def scenario(getter: FastObjects, client: Any) -> list[str]:
        through_botocore = botocore_calls(client)
        await getter.put(bucket, "a/watch.json", b'{"log_offset": 1}')
        await getter.put(bucket, "a/watch.json", b'{"log_offset": 2}')
        return through_botocore

    assert with_getter(scenario) == []
    assert boto3.client("s3").get_object(Bucket=bucket, Key="a/watch.json")["Body"].read() == b'{"log_offset": 2}'


@pytest.mark.parametrize(
    "rule",
    [FaultRule(status=503, rate=1.0, method="PUT", limit=2), FaultRule(drop=True, rate=1.0, method="PUT", limit=1)],
)
def test_a_put_that_fails_or_loses_its_answer_is_made_again_through_botocore(
    moto, bucket: str, rule: FaultRule, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FaultProxy(moto.endpoint_url) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint_url)
        proxy.add_rule(rule)

        async def scenario(getter: FastObjects, client: Any) -> bool:
            await getter.put(bucket, "a/watch.json", b'{"log_offset": 3}')
            return bucket in getter._slow

        slow = with_getter(scenario)
    assert rule.hits == rule.limit and not slow
    assert (
        boto3.client("s3", endpoint_url=moto.endpoint_url).get_object(Bucket=bucket, Key="a/watch.json")["Body"].read()
        == b'{"log_offset": 3}'
    )
