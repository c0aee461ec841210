"""Small HTML pages the local spot cloud serves where the AWS console would be: one per instance
(its state, why it ended, the tail of its console output) and a run ledger's objects, so the
operator's extra links work on the local spot cloud too. Read-only; GET only.

Routes (under the cloud's endpoint): ``/_emulator/pages/instances/<id>``,
``/_emulator/pages/ledger?bucket=B&prefix=P`` and ``/_emulator/pages/object?bucket=B&key=K``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from html import escape
from typing import Any
from urllib.parse import parse_qs, quote

from airflow_grid_resume.ledger import layout

PREFIX = "pages/"
CONSOLE_TAIL = 16 * 1024
OBJECT_LIMIT = 64 * 1024


# The console that the task's links open (links.py: ``console_url``, here the cloud's endpoint + this path).
CONSOLE_PATH = "/_emulator/pages"


def _page(title: str, body: str) -> bytes:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;font-size:14px;margin:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:left}table{border-collapse:collapse}</style></head>"
        f"<body><h1>{escape(title)}</h1><p>local spot cloud (emulated AWS)</p>{body}</body></html>"
    ).encode()


def instance_html(described: Mapping[str, Any], console_tail: str) -> bytes:
    """An instance's page from ``FabricInstance.describe()`` and the end of its console output."""
    rows = "".join(
        f"<tr><th>{escape(k)}</th><td>{escape(_when(v) if k.endswith('_at') else str(v))}</td></tr>"
        for k, v in described.items()
        if k not in ("imds_endpoint", "directory")
    )
    return _page(
        f"instance {described.get('instance_id')}",
        f"<table data-testid='instance'>{rows}</table><h2>console output (end)</h2><pre>{escape(console_tail)}</pre>",
    )


def _when(value: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(value))) if value else "-"


def ledger_html(bucket: str, prefix: str, objects: list[Mapping[str, Any]]) -> bytes:
    """A prefix's objects, each linked to its content (``objects``: ListObjectsV2 ``Contents``)."""
    rows = "".join(
        f"<tr><td><a href='/_emulator/pages/object?bucket={quote(bucket, safe='')}&key={quote(o['Key'], safe='')}'>"
        f"{escape(o['Key'][len(prefix) :].lstrip('/'))}</a></td><td>{int(o.get('Size', 0))}</td>"
        f"<td>{escape(str(o.get('LastModified', '')))}</td></tr>"
        for o in objects
    )
    return _page(
        f"s3://{bucket}/{prefix}",
        f"<table data-testid='objects'><tr><th>key</th><th>bytes</th><th>modified</th></tr>{rows}</table>",
    )


def object_html(bucket: str, key: str, data: bytes) -> bytes:
    text = data[:OBJECT_LIMIT].decode(errors="replace")
    more = f"<p>(first {OBJECT_LIMIT} of {len(data)} bytes)</p>" if len(data) > OBJECT_LIMIT else ""
    return _page(f"s3://{bucket}/{key}", f"{more}<pre>{escape(text)}</pre>")


def serve(
    cloud: Any, name: str, environ: Mapping[str, Any], start_response: Callable, s3: Callable[[], Any]
) -> list[bytes]:
    """Answer a ``/_emulator/pages/...`` GET; ``s3()`` gives a boto3 client of this cloud."""
    route = name[len(PREFIX) :]
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    status, body = "200 OK", b""
    try:
        if route.startswith("instances/"):
            instance_id = route[len("instances/") :]
            with cloud.lock:
                instance = cloud.instances.get(instance_id)
                described = instance.describe() if instance is not None else None
            if described is None:
                status, body = "404 Not Found", _page("no such instance", escape(instance_id))
            else:
                body = instance_html(described, _tail(os.path.join(str(described["directory"]), "console.log")))
        elif route == "ledger":
            bucket, prefix = query["bucket"], query.get("prefix", "")
            client = s3()
            objects = []
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                objects += [o for o in page.get("Contents", []) if f"/{layout.OBJECTS}/" not in o["Key"]]
            body = ledger_html(bucket, prefix, objects)
        elif route == "object":
            bucket, key = query["bucket"], query["key"]
            body = object_html(bucket, key, s3().get_object(Bucket=bucket, Key=key)["Body"].read())
        else:
            status, body = "404 Not Found", _page("no such page", escape(route))
    except KeyError as exc:
        status, body = "400 Bad Request", _page("missing parameter", escape(str(exc)))
    except Exception as exc:  # a page about a missing object says so instead of a 500
        status, body = "404 Not Found", _page("not found", escape(str(exc)))
    start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


def local_s3(endpoint_url: str) -> Any:
    """A client of this cloud's own S3 (any keys do)."""
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - CONSOLE_TAIL))
            return fh.read().decode(errors="replace")
    except OSError:
        return "(no console output)"
