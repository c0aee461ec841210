"""The local spot cloud: moto's EC2 and S3 over HTTP, plus what moto lacks.

- A fault layer in front of moto: spot capacity withheld per (instance type, zone) for a while
  (RunInstances answers HTTP 500 InsufficientInstanceCapacity, as EC2 does), RunInstances
  throttling with EC2's token bucket (503 RequestLimitExceeded), and ClientToken idempotency
  (same token, same parameters: the same instance; other parameters: IdempotentParameterMismatch).
- A fabric: an instance launched with the project's bootstrap user data runs that very script as
  a local process, in a fresh directory, with its own metadata service (``MetadataService``).
- Interruptions: a notice through the instance's metadata service, then, after the notice
  window, the process group killed and the instance terminated with Server.SpotInstanceTermination;
  or a hard loss with no notice.

Control routes live on the same port under ``/_emulator/`` (docs/emulator.md). Run it with
``grid-resume emulator``; from Python, use :class:`airflow_grid_resume.emulator.client.LocalSpotCloud`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import faulthandler
import functools
import hashlib
import io
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.etree import ElementTree

from airflow_grid_resume.agent.child import become_subreaper, reap_orphans
from airflow_grid_resume.ec2.bootstrap import parse_marker
from airflow_grid_resume.ec2.prices import on_demand_price
from airflow_grid_resume.emulator import pages
from airflow_grid_resume.emulator.bucketrules import BucketRuleBook, BucketRules
from airflow_grid_resume.emulator.catalog import (
    Offerings,
    RequirementsError,
    describe_offerings_xml,
    matching_types,
    requirements_xml,
    unsupported_message,
)
from airflow_grid_resume.emulator.faults import (
    FAULT_MESSAGE,
    FAULT_STATUS,
    Faults,
    build_skew_library,
    skewed_clock_env,
)
from airflow_grid_resume.emulator.imds import MetadataService
from airflow_grid_resume.emulator.sqsweather import NEW_QUEUE_SECONDS, SqsWeather, fault_reply, throttled_reply
from airflow_grid_resume.emulator.tracereplay import TraceReplay, replays_allow

DEFAULT_NOTICE_SECONDS = 120.0
SPOT_TERMINATION = "Server.SpotInstanceTermination"
SCHEDULED_STOP = "Server.ScheduledStop"
# Scheduled event codes the cloud carries out at NotBefore (the instance's processes end either way: a rebooted
# emulated instance would run nothing, as user data does not run again after a reboot).
ENDING_EVENT_CODES = ("instance-stop", "instance-retirement", "instance-reboot", "system-reboot")
_EC2_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
)
_INSTANCE_ID = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")
_FILTER_KEY = re.compile(r"Filter\.(\d+)\.(Name|Value\.\d+)")
_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ec2/")
_PRICE_ITEM = re.compile(rb"<item>(?:(?!</item>).)*?<spotPrice>[^<]*</spotPrice>(?:(?!</item>).)*?</item>", re.S)


def default_spot_price(instance_type: str, zone: str) -> float:
    """A plausible spot price: 30-45 % of the on-demand list price, stable per type and zone
    (moto answers 0.00001 for everything, which makes every cost estimate zero)."""
    listed = on_demand_price(instance_type) or 0.10
    spread = int.from_bytes(hashlib.sha256(f"{instance_type}/{zone}".encode()).digest()[:2], "big") / 65535
    return round(listed * (0.30 + 0.15 * spread), 4)


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc (Linux), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, stack = [], [pid]
    while stack:
        current = stack.pop()
        out.append(current)
        stack.extend(children.get(current, []))
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and all its descendants, whatever process group or session they made:
    an instance that is reclaimed or powered off takes every process with it."""
    for member in descendants(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


INSTANCE_MARKER = "GRID_RESUME_EMULATED_INSTANCE"
# A Docker image whose root file system the instances boot (tests/system/test_stock_containers.py): the
# user data runs in a container of it as root, on the host's network (S3, SQS and the metadata service on loopback).
INSTANCE_IMAGE_ENV = "GRID_RESUME_INSTANCE_IMAGE"
# What the image's own environment decides, not this process's.
_HOST_ONLY = ("PATH", "PYTHONUSERBASE", "LD_PRELOAD", "FAKETIME", "FAKETIME_NO_CACHE", "DONT_FAKE_MONOTONIC")


def container_argv(image: str, instance_id: str, directory: str, env: dict[str, str], argv: list[str]) -> list[str]:
    """``docker run`` of ``argv`` in a container of ``image`` named after the instance, with ``env`` (the marker
    included: its processes are found and killed from here like local ones) and the instance's directory."""
    docker = os.environ.get("DOCKER", "docker")
    cmd = [docker, "run", "--rm", "--name", f"grid-resume-{instance_id}", "--network", "host"]
    cmd += ["-v", f"{directory}:{directory}", "-w", directory]
    for key, value in sorted(env.items()):
        if key not in _HOST_ONLY:
            cmd += ["-e", f"{key}={value}"]
    return [*cmd, image, *argv]


def marked_processes(instance_id: str) -> list[int]:
    """Every live process whose environment says it belongs to ``instance_id``: found even after
    its parents died and it was re-parented (a snapshot of a tree misses what forks meanwhile)."""
    needle = f"{INSTANCE_MARKER}={instance_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
    return found


KILL_TIMEOUT = 60.0  # a SIGKILLed process on a loaded machine can take seconds to finish exiting


def kill_instance(instance_id: str, root: int | None, timeout: float = KILL_TIMEOUT) -> list[int]:
    """An instance that is reclaimed or powered off takes every process with it: kill its tree and
    every marked process, and return only once none of them runs any more (a zombie has ended: its
    parent, or we as the subreaper, reap it). SIGKILLed processes fork no more, but one that is still
    exiting shows as running: waiting for the condition, not a number of rounds, is what makes
    "nothing left behind" hold when this returns, however loaded the machine. Returns the processes
    still running after ``timeout`` seconds (none unless the kernel is stuck)."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        members = set(descendants(root) if root else []) | set(marked_processes(instance_id))
        live = [p for p in members if _alive(p)]
        if not live or time.monotonic() >= deadline:
            if live:
                print(f"local spot cloud: {instance_id}: processes {live} still run after SIGKILL", file=sys.stderr)
            return live
        for member in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member, signal.SIGKILL)
        time.sleep(pause)
        pause = min(0.1, pause * 2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def hop_limit(params: dict[str, str]) -> int:
    """RunInstances' ``MetadataOptions.HttpPutResponseHopLimit`` (EC2's default 1 when absent or unreadable)."""
    try:
        return min(64, max(1, int(params.get("MetadataOptions.HttpPutResponseHopLimit", "1"))))
    except ValueError:
        return 1


@dataclass
class FabricInstance:
    instance_id: str
    instance_type: str
    zone: str
    market: str
    region: str
    directory: str
    imds: MetadataService
    launched_at: float = field(default_factory=time.time)
    proc: subprocess.Popen | None = None
    state: str = "running"
    reason: str = ""
    interruption_pending: bool = False
    ended_at: float | None = None

    def describe(self) -> dict:
        return {
            "instance_id": self.instance_id,
            "instance_type": self.instance_type,
            "zone": self.zone,
            "lifecycle": self.market,
            "state": self.state,
            "reason": self.reason,
            "pid": self.proc.pid if self.proc else None,
            "exit_code": self.proc.returncode if self.proc else None,
            "imds_endpoint": self.imds.url,
            "imds_hop_limit": self.imds.hop_limit,
            "directory": self.directory,
            "launched_at": self.launched_at,
            "ended_at": self.ended_at,
        }


class SpotCloud:
    """The state and behaviour behind the WSGI app: capacity, tokens, instances, timers."""

    def __init__(self, *, state_dir: str, endpoint_url: str, notice_seconds: float = DEFAULT_NOTICE_SECONDS) -> None:
        self.state_dir = state_dir
        self.endpoint_url = endpoint_url
        self.notice_seconds = notice_seconds
        self.lock = threading.RLock()
        self.unavailable: dict[tuple[str, str, str], float] = {}  # (type, zone, market) -> until
        self.faults = Faults()
        self.sqs = SqsWeather()
        self.tokens: dict[str, tuple[str, bytes]] = {}
        self.token_locks: dict[str, threading.Lock] = {}  # one launch per ClientToken at a time
        self.instances: dict[str, FabricInstance] = {}
        self.timers: list[threading.Timer] = []
        self.fabric_enabled = True
        self.buckets = BucketRuleBook()  # buckets with security rules (emulator/bucketrules.py)
        self.counters = {"run_instances": 0, "capacity_errors": 0, "idempotent_replays": 0, "unsupported": 0}
        self.offerings = Offerings()
        self.replays: dict[tuple[str, str], TraceReplay] = {}  # spot traces replayed (emulator/tracereplay.py)
        self.replay_timers: dict[tuple[str, str], list[threading.Timer]] = {}

    # -- moto's backend (in this process) ------------------------------------------------------
    @staticmethod
    def backend(region: str) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends

        return ec2_backends[DEFAULT_ACCOUNT_ID][region]

    @staticmethod
    def sqs_backend(region: str) -> Any:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.sqs.models import sqs_backends

        return sqs_backends[DEFAULT_ACCOUNT_ID][region]

    def zone_of(self, region: str, params: dict[str, str]) -> str:
        if params.get("Placement.AvailabilityZone"):
            return params["Placement.AvailabilityZone"]
        if params.get("SubnetId"):
            with contextlib.suppress(Exception):
                return str(self.backend(region).get_subnet(params["SubnetId"]).availability_zone)
        return f"{region}a"

    @staticmethod
    def ssm_image(region: str, name: str) -> str | None:
        """The AMI id an SSM parameter of ``region`` holds (``resolve:ssm:NAME``), None when there is none."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ssm.models import ssm_backends

        try:
            parameter = ssm_backends[DEFAULT_ACCOUNT_ID][region].get_parameter(name.split(":")[0])
        except Exception:
            return None
        value = str(getattr(parameter, "value", "") or "") if parameter is not None else ""
        return value if value.startswith("ami-") else None

    def image_exists(self, region: str, image_id: str) -> bool:
        try:
            return bool(self.backend(region).describe_images(ami_ids=[image_id]))
        except Exception:
            return False

    def young_instances(self, now: float | None = None) -> set[str]:
        """Instances still inside EC2's consistency window (unknown to DescribeInstances)."""
        return self._launched_within(self.faults.describe_not_found_seconds, now)

    def untagged_instances(self, now: float | None = None) -> set[str]:
        """Instances whose tags EC2 does not show yet (eventual consistency of tags)."""
        return self._launched_within(self.faults.tags_late_seconds, now)

    def launched_under(self, tokens: Iterable[str]) -> set[str]:
        """The instances RunInstances launched under these ClientTokens."""
        with self.lock:
            replies = [self.tokens[t][1] for t in tokens if t in self.tokens]
        return {m.decode() for reply in replies for m in _INSTANCE_ID.findall(reply)}

    def _launched_within(self, seconds: float, now: float | None) -> set[str]:
        if not seconds:
            return set()
        now = time.time() if now is None else now
        with self.lock:
            return {i.instance_id for i in self.instances.values() if now - i.launched_at < seconds}

    # -- capacity ------------------------------------------------------------------------------
    def set_capacity(
        self, instance_type: str, zone: str, available: bool, for_seconds: float | None, market: str
    ) -> list[dict]:
        markets = ("spot", "on-demand") if market == "all" else (market,)
        with self.lock:
            for m in markets:
                key = (instance_type, zone, m)
                if available and instance_type == "*" and zone == "*":  # all capacity back
                    for other in [k for k in self.unavailable if k[2] == m]:
                        self.unavailable.pop(other)
                elif available:
                    self.unavailable.pop(key, None)
                else:
                    self.unavailable[key] = time.time() + for_seconds if for_seconds else float("inf")
        return self.capacity_state()

    def has_capacity(self, instance_type: str, zone: str, market: str) -> bool:
        with self.lock:
            if market == "spot" and not replays_allow(list(self.replays.values()), instance_type, zone, time.time()):
                return False
            for key in (
                (instance_type, zone, market),
                ("*", zone, market),
                (instance_type, "*", market),
                ("*", "*", market),
            ):
                until = self.unavailable.get(key)
                if until is not None and until > time.time():
                    return False
        return True

    def replay_trace(self, doc: dict) -> list[dict]:
        """Replay a spot trace as the capacity and interruptions of (type, zone) from now (``data`` null or
        absent: stop replaying it). Answers every trace replayed."""
        key = (str(doc.get("instance_type") or "*"), str(doc.get("zone") or "*"))
        replay = TraceReplay.from_doc(doc, time.time()) if doc.get("data") is not None else None
        with self.lock:
            for timer in self.replay_timers.pop(key, []):
                timer.cancel()
            self.replays.pop(key, None)
            if replay is not None:
                self.replays[key] = replay
                timers = []
                for delay in replay.zero_ticks():
                    timer = threading.Timer(delay, functools.partial(self._reclaim_pool, replay))
                    timer.daemon = True
                    timers.append(timer)
                self.replay_timers[key] = timers
                self.timers.extend(timers)
                for timer in timers:
                    timer.start()
        return self.replay_state()

    def _reclaim_pool(self, replay: TraceReplay) -> None:
        """The start of a 0 tick: every spot instance running in the trace's pool gets its notice."""
        with self.lock:
            if self.replays.get((replay.instance_type, replay.zone)) is not replay:
                return  # replaced or stopped since
            doomed = [
                i.instance_id
                for i in self.instances.values()
                if i.market == "spot"
                and i.state == "running"
                and not i.interruption_pending
                and replay.matches(i.instance_type, i.zone)
            ]
        for instance_id in doomed:
            with contextlib.suppress(KeyError, ValueError):  # ended meanwhile
                self.interrupt(instance_id, 0.0, True)

    def replay_state(self) -> list[dict]:
        now = time.time()
        with self.lock:
            return [r.describe(now) for r in self.replays.values()]

    def capacity_state(self) -> list[dict]:
        now = time.time()
        with self.lock:
            return [
                {
                    "instance_type": t,
                    "zone": z,
                    "market": m,
                    "available": False,
                    "for_seconds": None if until == float("inf") else round(until - now, 3),
                }
                for (t, z, m), until in self.unavailable.items()
                if until > now
            ]

    # -- the fabric ----------------------------------------------------------------------------
    def start_instance(self, instance_id: str, region: str, params: dict[str, str], market: str) -> None:
        user_data = params.get("UserData", "")
        try:
            script = base64.b64decode(user_data).decode() if user_data else ""
        except (ValueError, UnicodeDecodeError):
            script = ""
        zone = self.zone_of(region, params)
        directory = tempfile.mkdtemp(prefix=f"{instance_id}-", dir=os.path.join(self.state_dir, "instances"))
        imds = MetadataService(
            instance_id=instance_id,
            instance_type=params.get("InstanceType", "?"),
            zone=zone,
            market=market,
            hop_limit=hop_limit(params),
        ).start()
        instance = FabricInstance(instance_id, params.get("InstanceType", "?"), zone, market, region, directory, imds)
        with self.lock:
            self.instances[instance_id] = instance
        marker = parse_marker(script)
        if marker is None or not self.fabric_enabled:
            return  # not ours (or the fabric is off): an instance without a process, as moto has it
        with open(os.path.join(directory, "user-data.sh"), "w") as fh:
            fh.write(script)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": directory,
            "GRID_RESUME_HOME": os.path.join(directory, "home"),
            "GRID_RESUME_NO_SHUTDOWN": "1",
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "emulated-instance-role",
            "AWS_SECRET_ACCESS_KEY": "emulated-instance-role",
            # EC2 sets no AWS_DEFAULT_REGION: the user data names the ledger's region (an instance in another
            # region still reaches its run's bucket and queue there); the instance's own region otherwise.
            "AWS_DEFAULT_REGION": str(marker.get("region") or region),
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url,
            INSTANCE_MARKER: instance_id,  # how every process of the instance is found when it ends
            "PYTHONUNBUFFERED": "1",
            # The instance's /tmp: removed with the instance's directory, as an instance's disk goes with it.
            "TMPDIR": os.path.join(directory, "tmp"),
            # Its own wall clock, when the control route set one: libfaketime in every process it starts.
            **skewed_clock_env(self.faults.clock_offset_seconds, self.faults.skew_library),
        }
        if os.environ.get("GRID_RESUME_PYTHONS"):  # the emulated image's interpreters (docs/emulator.md)
            env["GRID_RESUME_PYTHONS"] = os.environ["GRID_RESUME_PYTHONS"]
        os.makedirs(env["TMPDIR"])
        # python3 on the instance: this interpreter's directory comes first, as an AMI's python3 would, with the
        # packages this one has (boto3): installed with pip --user (the official Airflow image) they are found
        # through PYTHONUSERBASE, since the instance has its own HOME.
        env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
        env["PYTHONUSERBASE"] = site.getuserbase()
        argv = ["bash", os.path.join(directory, "user-data.sh")]
        image = os.environ.get(INSTANCE_IMAGE_ENV)
        if image:  # the instance's root file system from a Docker image: its python3 (or none), not this one's
            argv, env = container_argv(image, instance_id, directory, env, argv), dict(os.environ)
        console = open(os.path.join(directory, "console.log"), "wb")  # noqa: SIM115 (closed by the waiter)
        instance.proc = subprocess.Popen(
            argv,
            cwd=directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        threading.Thread(target=self._wait_for, args=(instance, console), daemon=True).start()

    def _wait_for(self, instance: FabricInstance, console: Any) -> None:
        assert instance.proc is not None
        instance.proc.wait()
        console.close()
        with self.lock:
            if instance.state == "running":
                # The bootstrap powers off when the agent ends: terminate, as shutdown behaviour says.
                # During an interruption EC2 records the reclaim, whoever powered off first.
                reason = SPOT_TERMINATION if instance.interruption_pending else "Client.InstanceInitiatedShutdown"
                self._terminate(instance, reason, kill=False)

    def _terminate(self, instance: FabricInstance, reason: str, *, kill: bool) -> None:
        with self.lock:
            if instance.state in ("shutting-down", "terminated"):
                return
            instance.state = "shutting-down"
            instance.reason = reason
        root = instance.proc.pid if kill and instance.proc and instance.proc.poll() is None else None
        kill_instance(instance.instance_id, root)  # also what the powered-off bootstrap left behind
        if os.environ.get(INSTANCE_IMAGE_ENV):  # its container, if the engine still has it
            subprocess.run(
                [os.environ.get("DOCKER", "docker"), "rm", "-f", f"grid-resume-{instance.instance_id}"],
                capture_output=True,
                check=False,
            )
        instance.imds.stop()
        try:
            ec2 = self.backend(instance.region).get_instance(instance.instance_id)
            if ec2.state != "terminated":
                ec2.terminate()
            if reason != "Client.UserInitiatedShutdown":
                from moto.ec2.models.instances import StateReason

                ec2.state_reason = StateReason(f"{reason}: {reason}", reason)
                ec2._reason = reason
        except Exception as exc:  # the process is gone either way; say why moto was not told
            print(f"local spot cloud: could not mark {instance.instance_id} terminated: {exc!r}", file=sys.stderr)
        with self.lock:
            instance.state = "terminated"
            instance.ended_at = time.time()

    def on_terminate_api(self, instance_ids: Iterable[str]) -> None:
        """TerminateInstances from a client: the OS shuts down (SIGTERM), then power is cut."""
        for instance_id in instance_ids:
            instance = self.instances.get(instance_id)
            if instance is None or instance.state != "running":
                continue
            if instance.proc and instance.proc.poll() is None:
                kill_tree(instance.proc.pid, signal.SIGTERM)  # the OS shutting down
            self._later(2.0, functools.partial(self._terminate, instance, "Client.UserInitiatedShutdown", kill=True))

    def interrupt(self, instance_id: str, in_seconds: float, notice: bool) -> dict:
        instance = self.instances.get(instance_id)
        if instance is None:
            raise KeyError(f"no instance {instance_id} in the local spot cloud")
        if instance.state != "running":
            raise ValueError(f"instance {instance_id} is {instance.state}, not running")
        instance.interruption_pending = True
        if notice:
            instance.imds.schedule_notice(in_seconds=self.notice_seconds, after=in_seconds)
            delay = in_seconds + self.notice_seconds
        else:
            delay = in_seconds
        self._later(delay, lambda: self._terminate(instance, SPOT_TERMINATION, kill=True))
        return {"instance_id": instance_id, "notice": notice, "terminate_in_seconds": delay}

    def schedule_event(self, instance_id: str, code: str, in_seconds: float, after: float, duration: float) -> dict:
        """An EC2 scheduled event on the instance's metadata service; one that ends the instance is carried out
        at its NotBefore (state reason ``Server.ScheduledStop``), unless the instance ended before."""
        instance = self.instances.get(instance_id)
        if instance is None:
            raise KeyError(f"no instance {instance_id} in the local spot cloud")
        if instance.state != "running":
            raise ValueError(f"instance {instance_id} is {instance.state}, not running")
        posted = instance.imds.schedule_event(code=code, in_seconds=in_seconds, after=after, duration=duration)
        delay = None
        if code in ENDING_EVENT_CODES:
            delay = after + in_seconds
            self._later(delay, lambda: self._terminate(instance, SCHEDULED_STOP, kill=True))
        return {"instance_id": instance_id, "event_id": posted["event_id"], "code": code, "ends_in_seconds": delay}

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(max(0.0, delay), fn)
        timer.daemon = True
        with self.lock:
            self.timers.append(timer)
        timer.start()

    def shutdown(self) -> None:
        with self.lock:
            timers, instances = list(self.timers), list(self.instances.values())
        for timer in timers:
            timer.cancel()
        for instance in instances:
            proc = instance.proc
            kill_instance(instance.instance_id, proc.pid if proc is not None and proc.poll() is None else None)
            if instance.proc is not None:
                instance.proc.wait()
            if instance.state == "running":
                instance.state = "terminated"
                instance.imds.stop()
        reap_orphans()  # orphans of killed instances were re-parented to us (we are their subreaper)


Reply = tuple[str, list, bytes]  # status, headers, body: an answer not yet sent


class SpotCloudApp:
    """WSGI middleware in front of moto's dispatcher.

    Every EC2 request passes, in EC2's order: injected 5xx (``/_emulator/fault``), the API's token
    bucket (``/_emulator/throttle``), then the action itself; an answer marked for dropping
    (``/_emulator/drop``) is computed, and the connection closed instead of sending it. S3 PUTs
    (``PutObject``) can be dropped the same way.
    """

    def __init__(self, inner: Callable, cloud: SpotCloud) -> None:
        self.inner = inner
        self.cloud = cloud
        # S3 carries out a conditional write atomically; moto checks If-Match/If-None-Match, then stores, with
        # nothing in between, so two racing writers could both win. One at a time here, as S3 behaves.
        self._conditional_puts = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if path.startswith("/_emulator/"):
            return self._control(environ, body, start_response)
        faults = self.cloud.faults
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("AmazonSQS."):
            return self._sqs(environ, target.split(".", 1)[1], body, start_response)
        if environ.get("REQUEST_METHOD") == "POST" and b"Action=" in body[:4096]:
            params = dict(parse_qsl(body.decode(errors="replace"), keep_blank_values=True))
            match = _REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
            region = match.group(1) if match else "us-east-1"
            action = params.get("Action", "")
            code = faults.take_fault(action)
            if code is not None:
                reply = _error(FAULT_STATUS[code], code, FAULT_MESSAGE[code])
            elif not faults.admit(action):
                reply = _error("503 Service Unavailable", "RequestLimitExceeded", "Request limit exceeded.")
            else:
                reply = self._ec2(environ, action, params, region)
            if faults.take_drop(action):
                return self._drop(environ)
            return _send(start_response, reply)
        book = self.cloud.buckets
        rules = book.of(environ)  # S3 from here on: the bucket's security rules, when it has some
        if rules is not None:
            refused = book.refuse(environ, rules)
            if refused is not None:
                return _send(start_response, refused)
            book.map_conditions(environ, rules)
        conditional = environ.get("REQUEST_METHOD") == "PUT" and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        )
        if environ.get("REQUEST_METHOD") == "PUT" and faults.take_drop("PutObject"):
            if conditional:
                with self._conditional_puts:
                    self._call_inner(environ)
            else:
                self._call_inner(environ)  # applied, then the answer is lost
            return self._drop(environ)
        if conditional:
            with self._conditional_puts:
                reply = self._call_inner(environ)
            return _send(start_response, reply if rules is None else book.answered(environ, reply, rules))
        if rules is not None:
            return _send(start_response, book.answered(environ, self._call_inner(environ), rules))
        return self.inner(environ, start_response)

    def _sqs(self, environ: dict, op: str, body: bytes, start_response: Callable) -> Iterable[bytes]:
        """SQS (JSON protocol): injected 5xx, throttling and lost answers as for EC2 (the API is
        ``sqs:<Operation>``), then SQS's own behaviour that moto lacks (emulator/sqsweather.py)."""
        faults, weather = self.cloud.faults, self.cloud.sqs
        api = f"sqs:{op}"
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            params = {}
        code = faults.take_fault(api)
        if code is not None:
            reply = fault_reply(code)
        elif not faults.admit(api):
            reply = throttled_reply()
        else:
            refused = weather.refuse(op, params, self.cloud.sqs_backend(_region_of(environ, "sqs")))
            reply = refused or weather.answered(op, params, self._call_inner(environ))
        if faults.take_drop(api):
            return self._drop(environ)
        return _send(start_response, reply)

    def _ec2(self, environ: dict, action: str, params: dict[str, str], region: str) -> Reply:
        if action == "RunInstances":
            return self._run_instances(environ, params, region)
        if action == "DescribeInstances":
            return self._describe_instances(environ, params)
        if action == "GetConsoleOutput":
            return self._console_output(environ, params.get("InstanceId", ""))
        if action == "DescribeInstanceTypeOfferings" and params.get("LocationType") == "availability-zone":
            body = describe_offerings_xml(self.cloud.offerings.pairs(region), params, os.urandom(8).hex())
            return "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], body
        if action == "GetInstanceTypesFromInstanceRequirements":
            return self._types_from_requirements(params, region)
        if action == "DescribeSpotPriceHistory":
            return self._spot_price_history(environ, params.get("AvailabilityZone"))
        if action == "GetSpotPlacementScores":
            return self._placement_scores(params, region)
        if action == "TerminateInstances":
            ids = [v for k, v in params.items() if k.startswith("InstanceId.")]
            reply = self._call_inner(environ)
            if reply[0].startswith("200"):
                self.cloud.on_terminate_api(ids)
            return reply
        return self._call_inner(environ)

    def _types_from_requirements(self, params: dict[str, str], region: str) -> Reply:
        """GetInstanceTypesFromInstanceRequirements (moto has none), over moto's instance type data."""
        offered = {t for t, _ in self.cloud.offerings.pairs(region)}
        try:
            types = matching_types(params, offered)
        except RequirementsError as exc:
            return _error("400 Bad Request", exc.code, str(exc))
        body = requirements_xml(types, os.urandom(8).hex())
        return "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], body

    @staticmethod
    def _drop(environ: dict) -> list[bytes]:
        """Close the client's connection with no answer (the request was carried out)."""
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        raise ConnectionResetError("local spot cloud: answer dropped on purpose")  # werkzeug closes quietly

    def _call_inner(self, environ: dict) -> Reply:
        """moto's whole answer, before anything is sent on (each request has its own capture)."""
        captured: dict = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.inner(environ, capture))
        return captured["status"], captured["headers"], body

    def _describe_instances(self, environ: dict, params: dict[str, str]) -> Reply:
        """EC2's eventual consistency: an instance younger than the consistency window is unknown
        when asked for by id (the whole call fails, as on EC2) and left out of filtered answers; one whose
        tags are late is listed without them, and a filter on tags does not match it."""
        young = self.cloud.young_instances()
        asked = [v for k, v in params.items() if k.startswith("InstanceId.")]
        unknown = [i for i in asked if i in young]
        if unknown:
            self.cloud.faults.counters["not_found"] += 1
            ids = ", ".join(f"'{i}'" for i in unknown)
            return _error("400 Bad Request", "InvalidInstanceID.NotFound", f"The instance ID {ids} does not exist")
        untagged = self.cloud.untagged_instances()
        by_tag = any(k.startswith("Filter.") and k.endswith(".Name") and v.startswith("tag") for k, v in params.items())
        hidden = young | (untagged if by_tag else set())  # a tag filter cannot match tags EC2 does not show yet
        params, tokens = without_filter(params, "client-token")
        keep = None
        if tokens is not None:  # EC2 filters by ClientToken; moto does not know the filter
            data = urlencode(params).encode()
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(data), str(len(data))
            keep = self.cloud.launched_under(tokens)
        reply = self._call_inner(environ)
        if (hidden or untagged or keep is not None) and reply[0].startswith("200"):
            body = _without_instances(reply[2], hidden, untagged, keep)
            return reply[0], _with_length(reply[1], body), body
        return reply

    def _spot_price_history(self, environ: dict, zone: str | None) -> Reply:
        """moto's answer with each item's price replaced by this cloud's price for its type and zone,
        and only for the zone asked for (as EC2 does; moto ignores AvailabilityZone)."""
        status, headers, body = self._call_inner(environ)

        def reprice(match: re.Match) -> bytes:
            item = match.group(0)
            found_type = re.search(rb"<instanceType>([^<]+)</instanceType>", item)
            found_zone = re.search(rb"<availabilityZone>([^<]+)</availabilityZone>", item)
            if not (found_type and found_zone):
                return item
            if zone and found_zone.group(1).decode() != zone:
                return b""
            price = default_spot_price(found_type.group(1).decode(), found_zone.group(1).decode())
            return re.sub(rb"<spotPrice>[^<]*</spotPrice>", f"<spotPrice>{price:.6f}</spotPrice>".encode(), item)

        if status.startswith("200"):
            body = _PRICE_ITEM.sub(reprice, body)
        return status, _with_length(headers, body), body

    def _placement_scores(self, params: dict[str, str], region: str) -> Reply:
        """GetSpotPlacementScores (moto lacks it), per zone of the region as EC2 answers with
        ``SingleAvailabilityZone``: 9 when spot has capacity now for one of the types, 1 when for none."""
        types = [v for k, v in sorted(params.items()) if k.startswith("InstanceType.")]
        if not types:
            return _error("400 Bad Request", "MissingParameter", "The request must contain the parameter InstanceType")
        items = []
        for zone in self.cloud.backend(region).describe_availability_zones():
            score = 9 if any(self.cloud.has_capacity(t, zone.name, "spot") for t in types) else 1
            items.append(
                f"<item><region>{region}</region><availabilityZoneId>{zone.zone_id}</availabilityZoneId>"
                f"<score>{score}</score></item>"
            )
        body = (
            '<GetSpotPlacementScoresResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            f"<requestId>{os.urandom(8).hex()}</requestId>"
            f"<spotPlacementScoreSet>{''.join(items)}</spotPlacementScoreSet>"
            "</GetSpotPlacementScoresResponse>"
        ).encode()
        return "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], body

    def _console_output(self, environ: dict, instance_id: str) -> Reply:
        """moto's answer with the instance's real console (what its user data printed; EC2 keeps the last 64 KiB)."""
        status, headers, body = self._call_inner(environ)
        instance = self.cloud.instances.get(instance_id)
        if status.startswith("200") and instance is not None:
            try:
                with open(os.path.join(instance.directory, "console.log"), "rb") as fh:
                    data = fh.read()[-65536:]
            except OSError:
                data = b""
            output = b"<output>" + base64.b64encode(data) + b"</output>"
            body = re.sub(rb"<output>.*?</output>|<output/>", lambda _: output, body, count=1, flags=re.DOTALL)
        return status, _with_length(headers, body), body

    def _run_instances(self, environ: dict, params: dict[str, str], region: str) -> Reply:
        cloud = self.cloud
        token = params.get("ClientToken")
        fingerprint = json.dumps(sorted((k, v) for k, v in params.items() if k != "ClientToken"))
        with cloud.lock:
            cloud.counters["run_instances"] += 1
            token_lock = cloud.token_locks.setdefault(token, threading.Lock()) if token else contextlib.nullcontext()
        with token_lock:  # check, launch and record one token at a time: two racing retries, one instance
            if token and token in cloud.tokens:
                known_fingerprint, response = cloud.tokens[token]
                if known_fingerprint != fingerprint:
                    return _error(
                        "400 Bad Request",
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is already deleted "
                        "or that has different parameters.",
                    )
                with cloud.lock:
                    cloud.counters["idempotent_replays"] += 1
                return "200 OK", [("Content-Type", "text/xml"), ("Content-Length", str(len(response)))], response
            image_id = params.get("ImageId", "")
            if image_id.startswith("resolve:ssm:"):  # EC2 reads the parameter in the launch's region; moto cannot
                resolved = cloud.ssm_image(region, image_id[len("resolve:ssm:") :])
                if resolved is None:
                    return _error("400 Bad Request", "InvalidParameterValue", f"Invalid value '{image_id}' for ImageId")
                params = {**params, "ImageId": resolved}
                image_id = resolved
                environ = _with_param(environ, "ImageId", resolved)
            if not cloud.image_exists(region, image_id):  # EC2 checks this; moto does not
                return _error("400 Bad Request", "InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
            market = "spot" if params.get("InstanceMarketOptions.MarketType") == "spot" else "on-demand"
            instance_type = params.get("InstanceType", "m1.small")
            zone = cloud.zone_of(region, params)
            if not cloud.offerings.offered(region, instance_type, zone):  # a pair EC2 does not offer
                with cloud.lock:
                    cloud.counters["unsupported"] += 1
                zones = cloud.offerings.zones_offering(region, instance_type)
                return _error("400 Bad Request", "Unsupported", unsupported_message(instance_type, zone, zones))
            if not cloud.has_capacity(instance_type, zone, market):
                with cloud.lock:
                    cloud.counters["capacity_errors"] += 1
                return _error(
                    "500 Internal Server Error",
                    "InsufficientInstanceCapacity",
                    f"We currently do not have sufficient {instance_type} capacity in the Availability Zone you "
                    f"requested ({zone}). Our system will be working on provisioning additional capacity.",
                )
            reply = self._call_inner(environ)
            if reply[0].startswith("200"):
                ids = [m.decode() for m in _INSTANCE_ID.findall(reply[2])]
                if token:
                    with cloud.lock:
                        cloud.tokens[token] = (fingerprint, reply[2])
                for instance_id in ids[:1]:
                    cloud.start_instance(instance_id, region, params, "spot" if market == "spot" else "on-demand")
            return reply

    def _control(self, environ: dict, body: bytes, start_response: Callable) -> list[bytes]:
        name = environ["PATH_INFO"][len("/_emulator/") :]
        method = environ.get("REQUEST_METHOD")
        cloud = self.cloud
        faults = cloud.faults
        if method == "GET" and name.startswith(pages.PREFIX):  # where the AWS console would be
            return pages.serve(cloud, name, environ, start_response, lambda: pages.local_s3(cloud.endpoint_url))
        try:
            doc = json.loads(body) if body else {}
            if method == "GET" and name == "instances":
                with cloud.lock:
                    result: Any = {"instances": [i.describe() for i in cloud.instances.values()]}
            elif method == "GET" and name == "state":
                result = {
                    "endpoint_url": cloud.endpoint_url,
                    "capacity": cloud.capacity_state(),
                    "offerings": cloud.offerings.state(),
                    "traces": cloud.replay_state(),
                    "counters": {**cloud.counters, **faults.counters},
                    "notice_seconds": cloud.notice_seconds,
                    "faults": faults.state(),
                    "sqs": cloud.sqs.state(),
                    "bucket_rules": cloud.buckets.state(),
                }
            elif method == "POST" and name == "interrupt":
                result = cloud.interrupt(
                    str(doc["instance_id"]), float(doc.get("in_seconds", 0)), bool(doc.get("notice", True))
                )
            elif method == "POST" and name == "scheduled-event":
                result = cloud.schedule_event(
                    str(doc["instance_id"]),
                    str(doc.get("code", "instance-stop")),
                    float(doc.get("in_seconds", 120)),
                    float(doc.get("after", 0)),
                    float(doc.get("duration", 3600)),
                )
            elif method == "POST" and name == "capacity":
                result = {
                    "capacity": cloud.set_capacity(
                        str(doc.get("instance_type", "*")),
                        str(doc.get("zone", "*")),
                        bool(doc.get("available", False)),
                        float(doc["for_seconds"]) if doc.get("for_seconds") else None,
                        str(doc.get("market", "spot")),
                    )
                }
            elif method == "POST" and name == "offerings":
                if doc.get("reset"):
                    cloud.offerings.reset()
                else:
                    cloud.offerings.set_offered(
                        str(doc["instance_type"]), str(doc["zone"]), bool(doc.get("offered", False))
                    )
                result = {"offerings": cloud.offerings.state()}
            elif method == "POST" and name == "trace":
                result = {"traces": cloud.replay_trace(doc)}
            elif method == "POST" and name == "fabric":
                cloud.fabric_enabled = bool(doc.get("enabled", True))
                result = {"fabric": cloud.fabric_enabled}
            elif method == "POST" and name == "throttle":
                burst, rate = doc.get("burst"), doc.get("rate")
                result = {
                    "throttle": faults.set_throttle(
                        str(doc.get("api", "RunInstances")),
                        enabled=bool(doc.get("enabled", True)),
                        burst=None if burst is None else float(burst),
                        rate=None if rate is None else float(rate),
                    )
                }
            elif method == "POST" and name == "fault":
                result = faults.add_fault(str(doc.get("api", "*")), str(doc["code"]), int(doc.get("count", 1)))
            elif method == "POST" and name == "sqs":
                result = {"sqs": cloud.sqs.configure(doc)}
            elif method == "POST" and name == "bucket-rules":
                result = cloud.buckets.set(str(doc["bucket"]), BucketRules.from_doc(doc))
            elif method == "POST" and name == "drop":
                result = faults.add_drop(str(doc.get("action", "*")), int(doc.get("count", 1)))
            elif method == "POST" and name == "reset-faults":
                library, cloud.faults = cloud.faults.skew_library, Faults()
                cloud.faults.skew_library = library
                cloud.sqs.configure({"duplicate": 0, "reorder": 0, "new_queue_seconds": NEW_QUEUE_SECONDS})
                result = cloud.faults.state()
            elif method == "POST" and name == "consistency":
                seconds = float(doc.get("describe_not_found_seconds", 0))
                if seconds < 0:
                    raise ValueError(f"describe_not_found_seconds must be 0 or more, got {seconds}")
                late = float(doc.get("tags_late_seconds", 0))
                if late < 0:
                    raise ValueError(f"tags_late_seconds must be 0 or more, got {late}")
                faults.describe_not_found_seconds, faults.tags_late_seconds = seconds, late
                result = {"describe_not_found_seconds": seconds, "tags_late_seconds": late}
            elif method == "POST" and name == "clock":
                offset = float(doc.get("offset_seconds", 0))
                if offset and faults.skew_library is None:
                    faults.skew_library = build_skew_library(cloud.state_dir)  # a clear error without gcc
                faults.clock_offset_seconds = offset
                result = {"offset_seconds": offset}
            else:
                status, result = "404 Not Found", {"error": f"no control route {method} {environ['PATH_INFO']}"}
                return _json(start_response, status, result)
        except KeyError as exc:
            return _json(start_response, "404 Not Found", {"error": f"missing or unknown {str(exc).strip(chr(39))}"})
        except (TypeError, ValueError) as exc:
            return _json(start_response, "400 Bad Request", {"error": str(exc)})
        return _json(start_response, "200 OK", result)


def _with_param(environ: dict, name: str, value: str) -> dict:
    """The request with one query parameter replaced (moto reads the body again)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].seek(0)
    params = parse_qsl(environ["wsgi.input"].read(length).decode(), keep_blank_values=True)
    body = urlencode([(k, value if k == name else v) for k, v in params]).encode()
    return {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}


def _region_of(environ: dict, service: str) -> str:
    match = re.search(rf"Credential=[^/]+/\d{{8}}/([a-z0-9-]+)/{service}/", environ.get("HTTP_AUTHORIZATION", ""))
    return match.group(1) if match else "us-east-1"


def _error(status: str, code: str, message: str) -> Reply:
    data = _EC2_ERROR.format(code=code, message=message, request_id=os.urandom(8).hex()).encode()
    return status, [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))], data


def _send(start_response: Callable, reply: Reply) -> list[bytes]:
    start_response(reply[0], reply[1])
    return [reply[2]]


def _with_length(headers: list, body: bytes) -> list:
    return [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]


def without_filter(params: dict[str, str], name: str) -> tuple[dict[str, str], list[str] | None]:
    """A query's parameters without its filter called ``name`` (the other filters renumbered from 1: moto
    reads ``Filter.N`` up to the first gap), and that filter's values (None when it has none)."""
    filters: dict[int, tuple[str, list[str]]] = {}
    rest: dict[str, str] = {}
    for key, value in params.items():
        match = _FILTER_KEY.fullmatch(key)
        if match is None:
            rest[key] = value
            continue
        number = int(match.group(1))
        filter_name, values = filters.setdefault(number, ("", []))
        if match.group(2) == "Name":
            filters[number] = (value, values)
        else:
            values.append(value)
    found: list[str] | None = None
    kept = 0
    for _, (filter_name, values) in sorted(filters.items()):
        if filter_name == name:
            found = [*(found or []), *values]
            continue
        kept += 1
        rest[f"Filter.{kept}.Name"] = filter_name
        for index, value in enumerate(values, 1):
            rest[f"Filter.{kept}.Value.{index}"] = value
    return rest, found


def _without_instances(
    body: bytes, hidden: set[str], untagged: set[str] | None = None, keep: set[str] | None = None
) -> bytes:
    """A DescribeInstances answer without the ``hidden`` instances, nor any not in ``keep`` when given (and
    reservations left empty), and without the tags of the ``untagged`` ones."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return body
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    ElementTree.register_namespace("", ns.strip("{}"))
    reservations = root.find(f"{ns}reservationSet")
    if reservations is None:
        return body
    for reservation in list(reservations):
        instances = reservation.find(f"{ns}instancesSet")
        if instances is None:
            continue
        for instance in list(instances):
            instance_id = instance.findtext(f"{ns}instanceId")
            if instance_id in hidden or (keep is not None and instance_id not in keep):
                instances.remove(instance)
            elif instance_id in (untagged or ()) and (tags := instance.find(f"{ns}tagSet")) is not None:
                instance.remove(tags)
        if len(instances) == 0:
            reservations.remove(reservation)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)


def _json(start_response: Callable, status: str, doc: Any) -> list[bytes]:
    data = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def serve(
    host: str,
    port: int,
    state_dir: str | None,
    notice_seconds: float,
    ready: Callable[[dict], None],
    stop: threading.Event,
) -> None:
    """Run the local spot cloud until ``stop`` is set; clean up everything it started."""
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no request log on stdout/stderr
    become_subreaper()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # SIGUSR1: every thread's stack on stderr (debugging)
    own_dir = state_dir is None
    state_dir = state_dir or tempfile.mkdtemp(prefix="grid-resume-cloud-")
    os.makedirs(os.path.join(state_dir, "instances"), exist_ok=True)
    cloud = SpotCloud(state_dir=state_dir, endpoint_url="", notice_seconds=notice_seconds)
    app = SpotCloudApp(DomainDispatcherApplication(create_backend_app), cloud)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    cloud.endpoint_url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        ready(
            {
                "endpoint_url": cloud.endpoint_url,
                "ec2_endpoint_url": cloud.endpoint_url,
                "s3_endpoint_url": cloud.endpoint_url,
                "control_url": cloud.endpoint_url + "/_emulator/",
                "state_dir": state_dir,
                "pid": os.getpid(),
                "notice_seconds": notice_seconds,
            }
        )
        stop.wait()
    finally:
        cloud.shutdown()
        server.shutdown()
        server.server_close()
        if own_dir:
            shutil.rmtree(state_dir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grid-resume emulator", description="Run the local spot cloud.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state-dir", help="where instances' directories live (default: a temp dir, removed on exit)")
    parser.add_argument(
        "--notice-seconds",
        type=float,
        default=DEFAULT_NOTICE_SECONDS,
        help="seconds between a spot notice and the reclaim (EC2: 120)",
    )
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def ready(info: dict) -> None:
        print(json.dumps(info), flush=True)

    serve(args.host, args.port, args.state_dir, args.notice_seconds, ready, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
