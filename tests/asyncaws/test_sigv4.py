"""The run watch's SigV4 signer makes botocore's signature, byte for byte, and AWS's documented one."""

from __future__ import annotations

import datetime
import hashlib
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from airflow_grid_resume.asyncaws.sigv4 import EMPTY_SHA256, SigV4Signer, host_of

WHEN = datetime.datetime(2026, 12, 2, 16, 30, 5, tzinfo=datetime.timezone.utc)


def botocore_headers(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict, creds: Credentials, region: str, body: bytes
) -> dict[str, str]:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    S3SigV4Auth(creds, "s3", region).add_auth(request)
    return dict(request.headers.items())


def signed_by_us(
    signer: SigV4Signer, method: str, url: str, headers: dict, creds: Credentials, body: bytes
) -> dict[str, str]:
    return signer.headers(
        method,
        url,
        headers,
        access_key=creds.access_key,
        secret_key=creds.secret_key,
        token=creds.token,
        payload_hash=hashlib.sha256(body).hexdigest(),
        now=WHEN.timestamp(),
    )


@pytest.mark.parametrize(
    ("method", "url", "headers", "token", "body"),
    [
        ("GET", "http://127.0.0.1:5000/bucket/runs/r1/sessions/1/log/0000000000000000", {}, None, b""),
        ("GET", "https://my-bucket.s3.eu-west-1.amazonaws.com/runs/r1/heartbeat.json", {}, "FQoGZXIvYXdz//tok==", b""),
        ("GET", "https://s3.amazonaws.com:443/b/k", {"Range": "bytes=100-"}, None, b""),
        ("GET", "http://localhost:80/b/" + quote("odd key/+&=é~.json", safe="/~"), {"User-Agent": "x y"}, None, b""),
        ("GET", "http://[::1]:9000/b/k", {"Range": "bytes=0-9", "X-Custom": "  two   spaces "}, "t", b""),
        ("PUT", "http://127.0.0.1:5000/bucket/runs/r1/sessions/1/watch.json", {}, "t", b'{"log_offset": 5}'),
    ],
)
def test_the_same_headers_as_botocore(
    monkeypatch: pytest.MonkeyPatch, method: str, url: str, headers: dict, token: str | None, body: bytes
) -> None:
    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    region = "eu-west-1" if "eu-west-1" in url else "us-east-1"
    expected = botocore_headers(monkeypatch, method, url, headers, creds, region, body)
    assert signed_by_us(SigV4Signer(region), method, url, headers, creds, body) == expected


def test_the_signature_in_the_aws_documentation() -> None:
    """ "Signature calculations for the Authorization header: transferring payload in a single chunk",
    example "GET Object" (Amazon S3 API reference)."""
    headers = SigV4Signer("us-east-1").headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        token=None,
        now=datetime.datetime(2013, 5, 24, tzinfo=datetime.timezone.utc).timestamp(),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["X-Amz-Content-SHA256"] == EMPTY_SHA256


def test_a_new_day_or_a_new_secret_derives_a_new_key(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = SigV4Signer("us-east-1")
    url = "http://127.0.0.1:5000/b/k"
    for when, secret in [(WHEN, "s1"), (WHEN + datetime.timedelta(days=1), "s1"), (WHEN, "s2"), (WHEN, "s1")]:
        creds = Credentials("AKID", secret)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda w=when: w.replace(tzinfo=None))
        request = AWSRequest(method="GET", url=url)
        S3SigV4Auth(creds, "s3", "us-east-1").add_auth(request)
        mine = signer.headers("GET", url, {}, access_key="AKID", secret_key=secret, token=None, now=when.timestamp())
        assert mine["Authorization"] == request.headers["Authorization"]


def test_host_header_leaves_out_default_ports() -> None:
    assert host_of("https://B.s3.amazonaws.com:443/k") == "b.s3.amazonaws.com"
    assert host_of("http://127.0.0.1:80/k") == "127.0.0.1"
    assert host_of("http://127.0.0.1:5000/k") == "127.0.0.1:5000"
    assert host_of("http://[::1]:9000/k") == "[::1]:9000"


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdz//tok=="])
def test_an_sqs_receive_is_signed_as_botocore_signs_it(monkeypatch: pytest.MonkeyPatch, token: str | None) -> None:
    """The live-output queue's long poll (asyncaws/queuereader.py): SQS's JSON protocol, signed as any service
    but S3 (no payload-hash header), byte for byte as botocore's SigV4Auth."""
    from botocore.auth import SigV4Auth

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    url = "https://sqs.eu-west-1.amazonaws.com/"
    body = b'{"QueueUrl": "https://sqs.eu-west-1.amazonaws.com/123/grid-resume-live-ab", "WaitTimeSeconds": 20}'
    headers = {
        "X-Amz-Target": "AmazonSQS.ReceiveMessage",
        "Content-Type": "application/x-amz-json-1.0",
        "Content-Length": str(len(body)),
        "User-Agent": "airflow-grid-resume/1 x",
    }
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda: WHEN.replace(tzinfo=None))
    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=body)
    SigV4Auth(creds, "sqs", "eu-west-1").add_auth(request)
    got = signed_by_us(SigV4Signer("eu-west-1", "sqs"), "POST", url, headers, creds, body)
    assert got == dict(request.headers.items())
