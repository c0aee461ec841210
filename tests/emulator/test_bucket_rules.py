"""Buckets with an organisation's security rules in the local spot cloud, as S3 enforces them, and the
ledger's writers (RunLedger, the triggers' fast path) on them, with real boto3 and aiobotocore."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from airflow_grid_resume.asyncaws.fastobjects import FastObjects
from airflow_grid_resume.emulator.bucketrules import BucketRuleBook, BucketRules, kms_etag
from airflow_grid_resume.emulator.client import LocalSpotCloud
from airflow_grid_resume.ledger.errors import BucketRulesError
from airflow_grid_resume.ledger.s3client import make_s3_client
from airflow_grid_resume.ledger.store import RunLedger
from airflow_grid_resume.ledger.uri import parse_s3_uri
from airflow_grid_resume.ledger.writeoptions import S3WriteOptions

KMS = S3WriteOptions("aws:kms", "alias/training", "CRC32")


@pytest.fixture(scope="module")
def cloud() -> Iterator[LocalSpotCloud]:
    with LocalSpotCloud(notice_seconds=3) as c:
        saved = {k: os.environ.get(k) for k in c.aws_env()}
        os.environ.update(c.aws_env())
        yield c
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def strict(cloud: LocalSpotCloud) -> str:
    bucket = f"strict-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    cloud.make_strict(bucket)
    return bucket


# -- pure ---------------------------------------------------------------------------------------------
def test_rules_are_checked_when_set() -> None:
    assert BucketRules.from_doc({"strict": True}) == BucketRules("aws:kms", True, True)
    assert BucketRules.from_doc({"strict": True, "require_encryption": "AES256"}).require_encryption == "AES256"
    with pytest.raises(ValueError, match="require_encryption must be one of"):
        BucketRules.from_doc({"require_encryption": "kms"})


def test_a_kms_etag_is_not_the_md5_and_conditions_map_back() -> None:
    book = BucketRuleBook()
    rules = BucketRules("aws:kms")
    md5 = hashlib.md5(b"x").hexdigest()
    put = {"PATH_INFO": "/b/k", "REQUEST_METHOD": "PUT"}
    _, headers, _ = book.answered(put, ("200 OK", [("ETag", f'"{md5}"')], b""), rules)
    assert headers == [("ETag", f'"{kms_etag(md5)}"')] and kms_etag(md5) != md5
    listing = f"<Contents><ETag>&quot;{md5}&quot;</ETag></Contents>".encode()
    _, _, body = book.answered({"PATH_INFO": "/b", "REQUEST_METHOD": "GET"}, ("200 OK", [], listing), rules)
    assert body == f"<Contents><ETag>&quot;{kms_etag(md5)}&quot;</ETag></Contents>".encode()
    # an object's own bytes are never touched, whatever they hold
    _, _, data = book.answered({"PATH_INFO": "/b/k", "REQUEST_METHOD": "GET"}, ("200 OK", [], listing), rules)
    assert data == listing
    conditional = {"PATH_INFO": "/b/k", "HTTP_IF_MATCH": f'"{kms_etag(md5)}"', "HTTP_IF_NONE_MATCH": "*"}
    book.map_conditions(conditional, rules)
    assert conditional["HTTP_IF_MATCH"] == f'"{md5}"' and conditional["HTTP_IF_NONE_MATCH"] == "*"


# -- over HTTP ----------------------------------------------------------------------------------------
def test_a_strict_bucket_refuses_as_s3_does(strict: str) -> None:
    s3 = make_s3_client(max_attempts=1)
    with pytest.raises(ClientError) as denied:
        s3.put_object(Bucket=strict, Key="a", Body=b"x", ChecksumAlgorithm="CRC32")
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as aes:  # the policy names aws:kms: AES256 is refused too
        s3.put_object(Bucket=strict, Key="a", Body=b"x", ServerSideEncryption="AES256", ChecksumAlgorithm="CRC32")
    assert aes.value.response["Error"]["Code"] == "AccessDenied"
    with pytest.raises(ClientError) as locked:
        s3.put_object(Bucket=strict, Key="a", Body=b"x", ServerSideEncryption="aws:kms")
    assert locked.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert locked.value.response["Error"] == {
        "Code": "InvalidRequest",
        "Message": "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object "
        "Lock parameters",
    }
    with pytest.raises(ClientError) as copied:
        s3.copy_object(Bucket=strict, Key="b", CopySource={"Bucket": strict, "Key": "a"})
    assert copied.value.response["Error"]["Code"] == "AccessDenied"
    assert "a" not in {o["Key"] for o in s3.list_objects_v2(Bucket=strict).get("Contents", [])}


def test_a_strict_bucket_takes_encrypted_checksummed_writes_with_kms_etags_and_versions(strict: str) -> None:
    s3 = make_s3_client(max_attempts=1)
    first = s3.put_object(Bucket=strict, Key="a", Body=b"one", **KMS.put_kwargs())["ETag"]
    assert first.strip('"') != hashlib.md5(b"one").hexdigest()
    assert s3.head_object(Bucket=strict, Key="a")["ServerSideEncryption"] == "aws:kms"
    assert s3.list_objects_v2(Bucket=strict)["Contents"][0]["ETag"] == first
    second = s3.put_object(Bucket=strict, Key="a", Body=b"two", IfMatch=first, **KMS.put_kwargs())["ETag"]
    with pytest.raises(ClientError) as stale:
        s3.put_object(Bucket=strict, Key="a", Body=b"three", IfMatch=first, **KMS.put_kwargs())
    assert stale.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=strict, Key="a", IfMatch=second)["Body"].read() == b"two"
    versions = s3.list_object_versions(Bucket=strict)["Versions"]
    assert len(versions) == 2 and all(v["ETag"] != f'"{hashlib.md5(b"two").hexdigest()}"' for v in versions)


def test_the_ledger_names_the_option_a_strict_bucket_needs(strict: str) -> None:
    ledger = RunLedger(make_s3_client(max_attempts=1), parse_s3_uri(f"s3://{strict}/run"))
    with pytest.raises(BucketRulesError, match=r"set s3_encryption='aws:kms'"):
        ledger.put(ledger.key("spec.json"), b"{}")
    ledger.write_options = S3WriteOptions("aws:kms")
    with pytest.raises(BucketRulesError, match=r"Object Lock.*set s3_checksum='CRC32'"):
        ledger.put(ledger.key("spec.json"), b"{}")
    ledger.write_options = KMS
    assert ledger.put_once(ledger.key("spec.json"), b"{}") and ledger.put_once(ledger.key("spec.json"), b"{}")
    assert ledger.refresh(ledger.key("spec.json"))  # CopyObject onto itself carries the encryption too
    assert ledger.get(ledger.key("spec.json")) == b"{}"


def test_the_fast_path_signs_the_options_and_stays_fast_on_a_strict_bucket(strict: str) -> None:
    from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client

    async def go() -> list[str]:
        async with shared_client(SharedS3Hook(aws_conn_id=None), ("s3", None, os.environ["AWS_ENDPOINT_URL"])) as c:
            objects = FastObjects(c, KMS)
            generic = c._make_api_call
            calls: list[str] = []

            async def counted(operation: str, params: dict) -> Any:
                calls.append(operation)
                return await generic(operation, params)

            c._make_api_call = counted
            await objects.put(strict, "run/watch.json", b'{"log_offset": 1}')
            await objects.put(strict, "run/watch.json", b'{"log_offset": 2}')
            read = await objects.get(strict, "run/watch.json")
            assert read is not None and read.data == b'{"log_offset": 2}'
            assert objects._slow == set()
            return calls

    assert asyncio.run(go()) == []  # every request went the fast way, none was refused
    head = boto3.client("s3").head_object(Bucket=strict, Key="run/watch.json")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/training")


def test_the_control_route_checks_its_input_and_all_off_removes_the_rules(cloud: LocalSpotCloud) -> None:
    with pytest.raises(RuntimeError, match=r"HTTP 400.*cannot turn versioning on for bucket 'no-such-bucket'"):
        cloud.set_bucket_rules("no-such-bucket", versioning=True)
    with pytest.raises(RuntimeError, match=r"HTTP 400.*require_encryption must be one of"):
        cloud.set_bucket_rules("any-bucket", require_encryption="kms")
    bucket = f"plain-{uuid.uuid4().hex[:10]}"
    s3 = make_s3_client(max_attempts=1)
    s3.create_bucket(Bucket=bucket)
    cloud.set_bucket_rules(bucket, require_encryption="AES256")
    assert cloud.state()["bucket_rules"]["buckets"][bucket]["require_encryption"] == "AES256"
    with pytest.raises(ClientError):
        s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    cloud.set_bucket_rules(bucket)
    assert bucket not in cloud.state()["bucket_rules"]["buckets"]
    etag = s3.put_object(Bucket=bucket, Key="a", Body=b"x")["ETag"]
    assert etag == f'"{hashlib.md5(b"x").hexdigest()}"'  # moto's own ETag again: the rules are gone
