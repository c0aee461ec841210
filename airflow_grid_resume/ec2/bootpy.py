# The Python half of the instance's user data (ec2/bootstrap.py embeds this file's text): it fetches the agent
# zipapp and the run spec from the ledger and execs the agent, or records why the image cannot run it. It runs on
# the image's own python3 before the agent's libraries exist there, so it uses the standard library only (S3 GET
# and PUT signed with SigV4; credentials from the environment or the instance profile through IMDSv2) and keeps
# to Python 3.6 syntax: an image whose python3 is too old still gets its problem written to the ledger.
import base64
import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib

MIN = (3, 9)


def imds(path, token=None, method="GET", headers=None):
    base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://169.254.169.254").rstrip("/")
    req = urllib.request.Request(base + path, method=method, headers=headers or {})
    if token:
        req.add_header("X-aws-ec2-metadata-token", token)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return resp.read().decode()


def credentials():
    """(access key, secret key, session token): the environment's, else the instance profile's (IMDSv2)."""
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], os.environ.get("AWS_SESSION_TOKEN")
    token = imds("/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "300"})
    role = imds("/latest/meta-data/iam/security-credentials/", token).split()[0]
    doc = json.loads(imds("/latest/meta-data/iam/security-credentials/" + role, token))
    return doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token")


def region():
    found = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    token = imds("/latest/api/token", method="PUT", headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    return imds("/latest/meta-data/placement/region", token)


def object_url(bucket, key, where):
    """Path-style on a custom endpoint (``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``), else the regional
    virtual-hosted endpoint (path-style for bucket names with dots, which TLS wildcards do not cover)."""
    quoted = urllib.parse.quote(key, safe="/-_.~")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        return endpoint.rstrip("/") + "/" + bucket + "/" + quoted
    suffix = ".amazonaws.com.cn" if where.startswith("cn-") else ".amazonaws.com"
    if "." in bucket:
        return "https://s3." + where + suffix + "/" + bucket + "/" + quoted
    return "https://" + bucket + ".s3." + where + suffix + "/" + quoted


def write_headers(options, body):
    """The headers the bucket's rules ask of a PUT: spec.json's ``s3_write`` (ledger/writeoptions.py's
    ``S3WriteOptions.headers``, which this file cannot import)."""
    headers = {}
    if options.get("encryption"):
        headers["x-amz-server-side-encryption"] = options["encryption"]
    if options.get("kms_key_id"):
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = options["kms_key_id"]
    if options.get("checksum") == "CRC32":
        headers["x-amz-checksum-crc32"] = base64.b64encode((zlib.crc32(body) & 0xFFFFFFFF).to_bytes(4, "big")).decode()
    elif options.get("checksum") == "SHA256":
        headers["x-amz-checksum-sha256"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return headers


def signed_headers(method, url, where, creds, body, now, extra=None):
    """SigV4 headers for one S3 request (docs: "Signature Version 4 signing process"); ``extra`` headers
    are signed with the rest."""
    parts = urllib.parse.urlsplit(url)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    payload = hashlib.sha256(body or b"").hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": stamp}
    headers.update(extra or {})
    if creds[2]:
        headers["x-amz-security-token"] = creds[2]
    names = sorted(headers)
    canonical = "\n".join(
        [
            method,
            parts.path or "/",
            parts.query,
            "".join(n + ":" + headers[n].strip() + "\n" for n in names),
            ";".join(names),
            payload,
        ]
    )
    scope = day + "/" + where + "/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds[1]).encode()
    for part in (day, where, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        "AWS4-HMAC-SHA256 Credential="
        + creds[0]
        + "/"
        + scope
        + ", SignedHeaders="
        + ";".join(names)
        + ", Signature="
        + signature
    )
    del headers["host"]
    return headers


def s3(method, bucket, key, body=None, attempts=8, options=None):
    """One S3 request with retries on throttling, 5xx and no answer (credentials refreshed each attempt);
    a PUT carries the headers ``options`` (spec.json's ``s3_write``) asks for."""
    extra = write_headers(options or {}, body or b"") if method == "PUT" else {}
    where = region()
    for attempt in range(attempts):
        try:
            creds = credentials()
            url = object_url(bucket, key, where)
            now = datetime.datetime.now(datetime.timezone.utc)
            req = urllib.request.Request(
                url, data=body, method=method, headers=signed_headers(method, url, where, creds, body, now, extra)
            )
            if body is not None:  # else urllib sends a form's content type, which S3 servers may parse as one
                req.add_header("Content-Type", "application/octet-stream")
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if (exc.code < 500 and exc.code not in (400, 429)) or attempt == attempts - 1:
                raise RuntimeError(f"S3 {method} s3://{bucket}/{key}: HTTP {exc.code} {exc.read()[:300]!r}") from None
        except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
            if attempt == attempts - 1:
                raise RuntimeError(f"S3 {method} s3://{bucket}/{key}: {exc}") from None
        time.sleep(min(20, 0.5 * 2**attempt))


def ledger_key(prefix, name):
    return prefix.strip("/") + "/" + name if prefix.strip("/") else name


def boot_record(session, python, candidates, problem=None, message=None):
    doc = {
        "format": "grid-resume-boot/1",
        "session": session,
        "candidates": candidates,
        "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if problem:
        doc.update(problem=problem, message=message)
    else:
        doc.update(python=python, python_version=".".join(map(str, sys.version_info[:3])))
    return json.dumps(doc, sort_keys=True).encode()


REFUSED = "grid-resume: refused to start"  # ec2/bootstrap.py REFUSED_MARKER: the Airflow side looks for it
REFUSED_EXIT = 79


def refusal(what, key, found, expected):
    """The console line and boot.json message of a download whose SHA-256 is not the one launched with."""
    return (
        REFUSED + ": " + what + " in S3 (" + key + ", sha256 " + found + ") does not match the sha256 this session "
        "was launched with (" + expected + "): it was changed after upload, by something with write access to "
        "the bucket (another instance?). Nothing was run (docs/security.md)"
    )


def checked(what, key, body, expected):
    """None when ``body`` is what the user data says (or it says nothing: an older launcher), else the refusal."""
    found = hashlib.sha256(body).hexdigest()
    if expected in (None, "", "-") or hmac.compare_digest(found, expected):
        return None
    return refusal(what, key, found, expected)


def main(argv):
    """``run RUN_URI SESSION AGENT_KEY SPEC_KEY CANDIDATES [AGENT_SHA256 SPEC_SHA256]`` (this python fits: start
    the agent, if the downloads have those digests) or ``report RUN_URI SESSION SPEC_KEY CANDIDATES MESSAGE``
    (none fits: record the image problem)."""
    mode, run_uri, session = argv[1], argv[2], int(argv[3])
    bucket, _, prefix = run_uri[len("s3://") :].partition("/")
    boot_key = ledger_key(prefix, f"sessions/{session:06d}/boot.json")
    if mode == "report":
        spec_key, candidates, message = argv[4], argv[5].split(", ") if argv[5] else [], argv[6]
        try:  # the bucket's rules for the record's PUT; without the spec, try the PUT anyway
            options = json.loads(s3("GET", bucket, ledger_key(prefix, spec_key), attempts=3)).get("s3_write")
        except (RuntimeError, ValueError, AttributeError):
            options = None
        record = boot_record(session, None, candidates, "no_usable_python", message)
        s3("PUT", bucket, boot_key, record, options=options)
        return 78
    agent_key, spec_key, candidates = argv[4], argv[5], argv[6].split(", ") if argv[6] else []
    agent_sha256, spec_sha256 = (argv[7], argv[8]) if len(argv) > 8 else (None, None)
    home = os.environ["GRID_RESUME_HOME"]
    pyz = os.path.join(home, "agent.pyz")
    agent = s3("GET", bucket, ledger_key(prefix, agent_key))
    spec_body = s3("GET", bucket, ledger_key(prefix, spec_key))
    refused = checked("agent zipapp", agent_key, agent, agent_sha256) or checked(
        "run spec", spec_key, spec_body, spec_sha256
    )
    if refused:
        print(refused, file=sys.stderr)
        sys.stderr.flush()
        problem = "tampered_agent" if refused.startswith(REFUSED + ": agent") else "tampered_spec"
        try:  # the bucket's rules for the record's PUT, as far as the (refused) spec says them
            options = json.loads(spec_body).get("s3_write")
        except (ValueError, AttributeError):
            options = None
        s3("PUT", bucket, boot_key, boot_record(session, None, candidates, problem, refused), options=options)
        return REFUSED_EXIT
    with open(pyz + ".part", "wb") as fh:
        fh.write(agent)
    os.replace(pyz + ".part", pyz)
    spec = json.loads(spec_body)
    s3("PUT", bucket, boot_key, boot_record(session, sys.executable, candidates), options=spec.get("s3_write"))
    cmd = [
        sys.executable,
        "-X",
        "utf8",
        pyz,
        "--run-uri",
        run_uri,
        "--workdir",
        os.path.join(home, "work"),
        "--session",
        str(session),
    ]
    if spec.get("live_queue"):
        cmd += ["--live-queue", spec["live_queue"]]
    if spec.get("s3_write"):
        cmd += ["--s3-write", json.dumps(spec["s3_write"])]
    cmd += [*spec.get("agent_args", []), "--", *spec["command"]]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
