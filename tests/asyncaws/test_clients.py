"""The triggers' shared S3 client, as a server sees its requests."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import pytest

NO_SUCH_KEY = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code><Message>x</Message></Error>'


class _Recorder(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    agents: list[str] = []

    def do_GET(self) -> None:
        type(self).agents.append(self.headers.get("User-Agent", ""))
        self.send_response(404)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(NO_SUCH_KEY)))
        self.end_headers()
        self.wfile.write(NO_SUCH_KEY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    _Recorder.agents = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for key, value in {
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{server.server_address[1]}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield _Recorder.agents
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_shared_s3_client_sends_a_fixed_user_agent_with_airflows_extra(recorder: list[str]) -> None:
    """botocore would rebuild its User-Agent on every request; the shared client sends one fixed
    string, still naming this provider and carrying the Amazon provider's Airflow fields."""
    from airflow_grid_resume import __version__
    from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client

    async def scenario() -> None:
        hook = SharedS3Hook(aws_conn_id=None)
        async with shared_client(hook, ("s3", None, None)) as client:
            for _ in range(2):
                with pytest.raises(client.exceptions.NoSuchKey):
                    await client.get_object(Bucket="bkt", Key="k")
            assert client.meta.config.max_pool_connections >= 64

    asyncio.run(scenario())
    assert len(recorder) == 2 and recorder[0] == recorder[1]
    agent = recorder[0]
    assert agent.startswith(f"airflow-grid-resume/{__version__} Botocore/"), agent
    assert "Airflow/" in agent, agent  # the Amazon provider's user_agent_extra is kept


def test_the_users_app_id_stays_in_the_shared_clients_user_agent(
    recorder: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``AWS_SDK_UA_APP_ID`` (or ``sdk_ua_app_id`` in the AWS config, or ``user_agent_appid`` in the
    connection's config_kwargs) is how a user tags their SDK calls; botocore drops it from a
    ``Config(user_agent=...)`` User-Agent, so the fixed string must keep it (or stand aside)."""
    from airflow_grid_resume.asyncaws.clients import SharedS3Hook, shared_client

    monkeypatch.setenv("AWS_SDK_UA_APP_ID", "team-ml")

    async def scenario() -> None:
        async with shared_client(SharedS3Hook(aws_conn_id=None), ("s3", None, "app-id")) as client:
            with pytest.raises(client.exceptions.NoSuchKey):
                await client.get_object(Bucket="bkt", Key="k")

    asyncio.run(scenario())
    assert "app/team-ml" in recorder[0], recorder[0]


def test_fast_timestamps_match_botocore() -> None:
    from botocore.utils import parse_timestamp

    from airflow_grid_resume.asyncaws.clients import fast_timestamp

    for value in ("2026-11-25T11:00:00.000Z", "2026-11-25T11:00:00Z", "Wed, 25 Nov 2026 11:00:00 GMT", 1764068400):
        assert fast_timestamp(value) == parse_timestamp(value)
        assert fast_timestamp(value).utcoffset() == parse_timestamp(value).utcoffset()
