"""``LocalSpotCloud``: the emulator as a child process, with its control routes as methods."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from airflow_grid_resume.emulator.pages import CONSOLE_PATH


class LocalSpotCloud:
    """``with LocalSpotCloud(notice_seconds=5) as cloud: cloud.endpoint_url ...``"""

    def __init__(
        self,
        *,
        notice_seconds: float = 120.0,
        port: int = 0,
        state_dir: str | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.notice_seconds = notice_seconds
        self.port = port
        self.state_dir = state_dir
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}

    @property
    def endpoint_url(self) -> str:
        return str(self.info["endpoint_url"])

    def start(self) -> LocalSpotCloud:
        cmd = [
            sys.executable,
            "-m",
            "airflow_grid_resume.cli",
            "emulator",
            "--port",
            str(self.port),
            "--notice-seconds",
            str(self.notice_seconds),
        ]
        if self.state_dir:
            cmd += ["--state-dir", self.state_dir]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError("the local spot cloud exited before printing its endpoints")
        self.info = json.loads(line)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # Its shutdown waits until every instance's processes are gone (up to a minute on a loaded machine).
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> LocalSpotCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def aws_env(self) -> dict[str, str]:
        """Environment for boto3, aiobotocore and the agent to use this cloud."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "emulated",
            "AWS_SECRET_ACCESS_KEY": "emulated",
            "AWS_DEFAULT_REGION": "us-east-1",
            # links.CONSOLE_URL_ENV: the task's links open the pages this cloud serves
            "GRID_RESUME_CONSOLE_URL": self.endpoint_url + CONSOLE_PATH,
        }

    # -- control routes ------------------------------------------------------------------------
    def _call(self, method: str, name: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.endpoint_url}/_emulator/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"{method} /_emulator/{name}: HTTP {exc.code}: {exc.read().decode()}") from exc

    def instances(self) -> list[dict]:
        return list(self._call("GET", "instances")["instances"])

    def instance(self, instance_id: str) -> dict:
        return next(i for i in self.instances() if i["instance_id"] == instance_id)

    def state(self) -> dict:
        return dict(self._call("GET", "state"))

    def interrupt(self, instance_id: str, *, in_seconds: float = 0.0, notice: bool = True) -> dict:
        return dict(
            self._call("POST", "interrupt", {"instance_id": instance_id, "in_seconds": in_seconds, "notice": notice})
        )

    def schedule_event(
        self,
        instance_id: str,
        *,
        code: str = "instance-stop",
        in_seconds: float = 120.0,
        after: float = 0.0,
        duration: float = 3600.0,
    ) -> dict:
        """An EC2 scheduled event on the instance (``POST /_emulator/scheduled-event``, docs/emulator.md)."""
        body = {
            "instance_id": instance_id,
            "code": code,
            "in_seconds": in_seconds,
            "after": after,
            "duration": duration,
        }
        return dict(self._call("POST", "scheduled-event", body))

    def set_capacity(
        self,
        instance_type: str = "*",
        zone: str = "*",
        *,
        available: bool,
        for_seconds: float | None = None,
        market: str = "spot",
    ) -> dict:
        return dict(
            self._call(
                "POST",
                "capacity",
                {
                    "instance_type": instance_type,
                    "zone": zone,
                    "available": available,
                    "for_seconds": for_seconds,
                    "market": market,
                },
            )
        )

    def set_offered(self, instance_type: str, zone: str, *, offered: bool) -> dict:
        """Withdraw (or add) the offering of ``instance_type`` in ``zone``: DescribeInstanceTypeOfferings leaves it
        out and RunInstances answers 400 Unsupported there, as EC2 does for a pair it does not offer."""
        return dict(self._call("POST", "offerings", {"instance_type": instance_type, "zone": zone, "offered": offered}))

    def reset_offerings(self) -> dict:
        """Every region's offerings back to moto's data."""
        return dict(self._call("POST", "offerings", {"reset": True}))

    def replay_trace(
        self,
        instance_type: str,
        zone: str,
        data: list[float] | None,
        *,
        tick_seconds: float,
        start: int = 0,
    ) -> dict:
        """Replay a spot trace (one value per tick, above 0: spot available) as the (type, zone)'s spot capacity and
        interruptions from now, a tick every ``tick_seconds``; ``data=None`` stops replaying it."""
        body = {"instance_type": instance_type, "zone": zone, "data": data, "tick_seconds": tick_seconds}
        return dict(self._call("POST", "trace", {**body, "start": start}))

    def set_fabric(self, *, enabled: bool) -> dict:
        """Off: launched instances get no process (load tests with hundreds of instances)."""
        return dict(self._call("POST", "fabric", {"enabled": enabled}))

    def set_throttle(
        self, api: str = "RunInstances", *, enabled: bool = True, burst: float | None = None, rate: float | None = None
    ) -> dict:
        """A token bucket for ``api`` (an action, ``Describe*``, ``*``; EC2's default size unless given);
        ``api="defaults"``: every bucket EC2 documents; ``api="all", enabled=False``: none."""
        body: dict[str, Any] = {"api": api, "enabled": enabled}
        if burst is not None:
            body["burst"] = burst
        if rate is not None:
            body["rate"] = rate
        return dict(self._call("POST", "throttle", body))

    def inject_fault(self, api: str = "*", *, code: str = "InternalError", count: int = 1) -> dict:
        """The next ``count`` requests of ``api`` ("*": any EC2 action; ``sqs:SendMessage``, ``sqs:*``) answer
        ``code`` without being carried out."""
        return dict(self._call("POST", "fault", {"api": api, "code": code, "count": count}))

    def drop_responses(self, action: str = "*", *, count: int = 1) -> dict:
        """The next ``count`` requests of ``action`` (an EC2 action, ``PutObject`` for S3, "*" for any EC2
        action, ``sqs:<Operation>`` or ``sqs:*``) are carried out, then their connection is closed with no answer."""
        return dict(self._call("POST", "drop", {"action": action, "count": count}))

    def set_sqs(
        self, *, duplicate: int | None = None, reorder: int | None = None, new_queue_seconds: float | None = None
    ) -> dict:
        """SQS's at-least-once delivery: the next ``duplicate`` ReceiveMessage answers repeat a message
        delivered before, the next ``reorder`` hold their last message back for the answer after; a queue
        is unknown for ``new_queue_seconds`` after its creation (1 s by default, as SQS asks)."""
        body = {"duplicate": duplicate, "reorder": reorder, "new_queue_seconds": new_queue_seconds}
        return dict(self._call("POST", "sqs", {k: v for k, v in body.items() if v is not None}))

    def set_consistency(self, *, describe_not_found_seconds: float, tags_late_seconds: float = 0.0) -> dict:
        """For that long after its launch an instance is unknown to DescribeInstances, and for
        ``tags_late_seconds`` its tags are missing from describes (EC2's eventual consistency)."""
        body = {"describe_not_found_seconds": describe_not_found_seconds, "tags_late_seconds": tags_late_seconds}
        return dict(self._call("POST", "consistency", body))

    def set_bucket_rules(
        self,
        bucket: str,
        *,
        require_encryption: str | None = None,
        object_lock: bool = False,
        versioning: bool = False,
    ) -> dict:
        """A bucket with an organisation's security rules (``POST /_emulator/bucket-rules``): a policy
        that denies uploads without ``x-amz-server-side-encryption: require_encryption`` (and SSE-KMS
        ETags for ``aws:kms``), Object Lock default retention (uploads need a checksum), versioning."""
        body = {
            "bucket": bucket,
            "require_encryption": require_encryption,
            "object_lock": object_lock,
            "versioning": versioning,
        }
        return dict(self._call("POST", "bucket-rules", body))

    def make_strict(self, bucket: str) -> dict:
        """Every rule at once: SSE-KMS required, Object Lock, versioning."""
        return self.set_bucket_rules(bucket, require_encryption="aws:kms", object_lock=True, versioning=True)

    def reset_faults(self) -> dict:
        """Every fault off again: throttling back to the RunInstances bucket alone, no pending faults or drops,
        strong consistency, true clocks."""
        return dict(self._call("POST", "reset-faults", {}))

    def set_clock(self, *, offset_seconds: float) -> dict:
        """Instances launched from now on run with their wall clock this many seconds off (libfaketime)."""
        return dict(self._call("POST", "clock", {"offset_seconds": offset_seconds}))
