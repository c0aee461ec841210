"""What every write carries for the bucket's rules: validation, boto3 parameters, raw signed headers."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest
from botocore.httpchecksum import Crc32Checksum

from airflow_grid_resume.ledger.writeoptions import S3WriteOptions, checksum_value, explain_write_refusal


def test_bad_options_name_the_parameter_and_what_it_must_be() -> None:
    with pytest.raises(ValueError, match=r"s3_encryption must be one of AES256, aws:kms"):
        S3WriteOptions("kms")
    with pytest.raises(ValueError, match=r"s3_kms_key_id is only used with s3_encryption='aws:kms'"):
        S3WriteOptions("AES256", "alias/training")
    with pytest.raises(ValueError, match=r"s3_kms_key_id must be a key id"):
        S3WriteOptions("aws:kms", " ")
    with pytest.raises(ValueError, match=r"s3_checksum must be one of CRC32, SHA256"):
        S3WriteOptions(checksum="MD5")
    with pytest.raises(ValueError, match=r"unknown S3 write options \['sse'\]"):
        S3WriteOptions.from_json({"sse": "aws:kms"})


def test_options_travel_as_plain_json_and_none_says_nothing() -> None:
    options = S3WriteOptions("aws:kms", "alias/training", "CRC32")
    assert options.to_json() == {"encryption": "aws:kms", "kms_key_id": "alias/training", "checksum": "CRC32"}
    assert S3WriteOptions.from_json(options.to_json()) == options
    assert S3WriteOptions.from_json('{"encryption": "AES256"}') == S3WriteOptions("AES256")
    assert S3WriteOptions().to_json() is None and S3WriteOptions.from_json(None) == S3WriteOptions()


def test_boto3_parameters_for_puts_and_copies() -> None:
    options = S3WriteOptions("aws:kms", "alias/training", "SHA256")
    assert options.put_kwargs() == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/training",
        "ChecksumAlgorithm": "SHA256",
    }
    assert options.encryption_kwargs() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/training"}
    assert S3WriteOptions().put_kwargs() == {}


def test_raw_headers_carry_the_checksum_botocore_would_compute() -> None:
    body = b'{"log_offset": 12345}'
    crc = S3WriteOptions("AES256", checksum="CRC32").headers(body)
    assert crc == {
        "x-amz-server-side-encryption": "AES256",
        "x-amz-checksum-crc32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode(),
    }
    botocore_crc = Crc32Checksum()
    botocore_crc.update(body)
    assert crc["x-amz-checksum-crc32"] == base64.b64encode(botocore_crc.digest()).decode()
    assert checksum_value("SHA256", body) == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert S3WriteOptions().headers(body) == {}


def test_a_refusal_is_explained_only_when_an_option_would_cure_it() -> None:
    lock = "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters"
    assert "s3_checksum='CRC32'" in (explain_write_refusal("InvalidRequest", lock, S3WriteOptions()) or "")
    assert explain_write_refusal("InvalidRequest", lock, S3WriteOptions(checksum="CRC32")) is None
    assert "s3_encryption='aws:kms'" in (explain_write_refusal("AccessDenied", "denied", S3WriteOptions()) or "")
    assert explain_write_refusal("AccessDenied", "denied", S3WriteOptions("aws:kms")) is None
    assert explain_write_refusal("SlowDown", "", S3WriteOptions()) is None
