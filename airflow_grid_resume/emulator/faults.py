"""The local spot cloud's bad days: what real EC2 and S3 do that moto never does.

Pure bookkeeping (no HTTP here): per-API token buckets with EC2's documented sizes, injected 5xx
answers, requests carried out and then answered by a dropped connection, the consistency windows in
which a just-launched instance is unknown to DescribeInstances or listed without its tags, and a clock offset for the
instances launched next. ``SpotCloudApp`` (emulator/cloud.py) consults it on every request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# EC2's request token buckets (burst, refill per second), per account and region, from "Request throttling
# for the Amazon EC2 API" (docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html). Each API has its
# own bucket; these are the defaults of its category.
EC2_DEFAULT_BUCKETS: dict[str, tuple[float, float]] = {
    "RunInstances": (5, 2),
    "TerminateInstances": (100, 5),
    "Describe*": (100, 20),  # non-mutating actions
    "*": (50, 5),  # mutating actions (CreateTags, ...)
}

# What each injectable code answers, as EC2 sends it.
FAULT_STATUS = {
    "InternalError": "500 Internal Server Error",
    "InternalFailure": "500 Internal Server Error",
    "Unavailable": "503 Service Unavailable",
    "ServiceUnavailable": "503 Service Unavailable",
    "RequestTimeout": "503 Service Unavailable",
    "RequestLimitExceeded": "503 Service Unavailable",
}
FAULT_MESSAGE = {
    "InternalError": "An internal error has occurred",
    "InternalFailure": "An internal error has occurred",
    "Unavailable": "The service is unavailable. Please try again shortly.",
    "ServiceUnavailable": "The service is unavailable. Please try again shortly.",
    "RequestTimeout": "The request timed out.",
    "RequestLimitExceeded": "Request limit exceeded.",
}


class TokenBucket:
    """EC2's API rate limit: ``burst`` tokens, refilled at ``rate`` per second."""

    def __init__(self, burst: float, rate: float, now: float | None = None) -> None:
        self.burst, self.rate = float(burst), float(rate)
        self.tokens = self.burst
        self.updated = time.monotonic() if now is None else now
        self.lock = threading.Lock()

    def take(self, now: float | None = None) -> bool:
        with self.lock:
            now = time.monotonic() if now is None else now
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            return False


def bucket_key(action: str, buckets: dict[str, TokenBucket]) -> str | None:
    """The bucket an action draws from: its own, else its category's (Describe*, or * for the rest).
    Another service's action (``sqs:SendMessage``) draws from its own bucket or its service's (``sqs:*``)."""
    if action in buckets:
        return action
    if ":" in action:
        wildcard = action.split(":", 1)[0] + ":*"
        return wildcard if wildcard in buckets else None
    if action.startswith("Describe") and "Describe*" in buckets:
        return "Describe*"
    if "*" in buckets and not action.startswith("Describe"):
        return "*"
    return None


@dataclass
class Countdown:
    """The next ``count`` requests matching ``api`` get this treatment."""

    api: str
    count: int
    code: str = ""

    def matches(self, action: str) -> bool:
        """``*`` is every EC2 action (and S3's PutObject for drops); ``sqs:*`` every SQS operation."""
        if self.count <= 0:
            return False
        if self.api == action:
            return True
        service = action.split(":", 1)[0] + ":*" if ":" in action else "*"
        return self.api == service


# A skewed wall clock for one process tree, preloaded into an emulated instance's processes: it shifts
# CLOCK_REALTIME (clock_gettime, gettimeofday, time) by GRID_RESUME_CLOCK_OFFSET seconds and leaves the
# monotonic clock alone. libfaketime (Debian's 0.9.10) was tried first: it also fakes CLOCK_MONOTONIC, and
# Python's time.sleep and threading waits then fail with EINVAL or hang.
SKEW_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static long long offset_ns;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int (*real_gettimeofday)(struct timeval *, void *);

__attribute__((constructor)) static void init(void) {
    const char *value = getenv("GRID_RESUME_CLOCK_OFFSET");
    offset_ns = value ? (long long)(atof(value) * 1e9) : 0;
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ns;
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(ts);
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    if (!real_gettimeofday) real_gettimeofday = dlsym(RTLD_NEXT, "gettimeofday");
    int rc = real_gettimeofday(tv, tz);
    if (rc == 0 && tv) {
        struct timespec ts = {tv->tv_sec, tv->tv_usec * 1000};
        shift(&ts);
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"""


def build_skew_library(directory: str) -> str:
    """Compile the clock-skew shim into ``directory`` (once) and return its path; needs gcc."""
    import os
    import shutil
    import subprocess

    target = os.path.join(directory, "grid-resume-skew.so")
    if os.path.exists(target):
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise ValueError("a skewed clock needs a C compiler (gcc) to build its preload library")
    source = os.path.join(directory, "grid-resume-skew.c")
    with open(source, "w") as fh:
        fh.write(SKEW_SOURCE)
    done = subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-o", target, source, "-ldl"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise ValueError(f"building the clock-skew library failed: {done.stderr.strip()[:500]}")
    return target


def skewed_clock_env(offset_seconds: float, library: str | None) -> dict[str, str]:
    """Environment that makes a process tree's wall clock run ``offset_seconds`` off (monotonic untouched)."""
    if not offset_seconds or library is None:
        return {}
    return {"LD_PRELOAD": library, "GRID_RESUME_CLOCK_OFFSET": f"{offset_seconds:.3f}"}


class Faults:
    """Every fault switch of the local spot cloud; thread-safe, off by default except RunInstances' bucket."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, TokenBucket] = {"RunInstances": TokenBucket(*EC2_DEFAULT_BUCKETS["RunInstances"])}
        self.faults: list[Countdown] = []
        self.drops: list[Countdown] = []
        self.describe_not_found_seconds = 0.0
        self.tags_late_seconds = 0.0
        self.clock_offset_seconds = 0.0
        self.skew_library: str | None = None  # built by the clock route, when first needed
        self.counters = {"throttled": 0, "faults": 0, "dropped": 0, "not_found": 0}

    # -- throttling -------------------------------------------------------------------------
    def set_throttle(
        self, api: str, *, enabled: bool = True, burst: float | None = None, rate: float | None = None
    ) -> dict:
        """A bucket for ``api`` (an action, ``Describe*``, ``*``), EC2's default size unless given;
        ``api="defaults"`` turns every documented bucket on, ``"all"`` with ``enabled=False`` off."""
        with self.lock:
            if api == "defaults":
                self.buckets = {k: TokenBucket(*v) for k, v in EC2_DEFAULT_BUCKETS.items()}
            elif api == "all" and not enabled:
                self.buckets = {}
            elif not enabled:
                self.buckets.pop(api, None)
            else:
                default = (
                    EC2_DEFAULT_BUCKETS.get(api)
                    or EC2_DEFAULT_BUCKETS["Describe*" if api.startswith("Describe") else "*"]
                )
                self.buckets[api] = TokenBucket(
                    default[0] if burst is None else burst, default[1] if rate is None else rate
                )
            return self.throttle_state()

    def throttle_state(self) -> dict:
        return {k: {"burst": b.burst, "rate": b.rate} for k, b in self.buckets.items()}

    def admit(self, action: str) -> bool:
        """False: this request is throttled (RequestLimitExceeded)."""
        with self.lock:
            key = bucket_key(action, self.buckets)
            bucket = self.buckets.get(key) if key else None
        if bucket is None or bucket.take():
            return True
        with self.lock:
            self.counters["throttled"] += 1
        return False

    # -- injected errors and dropped answers ---------------------------------------------------
    def add_fault(self, api: str, code: str, count: int) -> dict:
        if code not in FAULT_STATUS:
            raise ValueError(f"code must be one of {', '.join(sorted(FAULT_STATUS))}, got {code!r}")
        with self.lock:
            self.faults.append(Countdown(api, int(count), code))
            return self.fault_state()

    def take_fault(self, action: str) -> str | None:
        """The error code this request must answer with, or None."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(action):
                    fault.count -= 1
                    self.counters["faults"] += 1
                    return fault.code
        return None

    def add_drop(self, action: str, count: int) -> dict:
        with self.lock:
            self.drops.append(Countdown(action, int(count)))
            return self.fault_state()

    def take_drop(self, action: str) -> bool:
        """True: carry this request out, then close the connection without an answer."""
        with self.lock:
            for drop in self.drops:
                if drop.matches(action):
                    drop.count -= 1
                    self.counters["dropped"] += 1
                    return True
        return False

    def fault_state(self) -> dict:
        return {
            "faults": [{"api": f.api, "code": f.code, "count": f.count} for f in self.faults if f.count > 0],
            "drops": [{"action": d.api, "count": d.count} for d in self.drops if d.count > 0],
        }

    # -- eventual consistency and clocks ---------------------------------------------------------
    def state(self) -> dict:
        with self.lock:
            return {
                "throttle": self.throttle_state(),
                **self.fault_state(),
                "describe_not_found_seconds": self.describe_not_found_seconds,
                "tags_late_seconds": self.tags_late_seconds,
                "clock_offset_seconds": self.clock_offset_seconds,
                "counters": dict(self.counters),
            }
