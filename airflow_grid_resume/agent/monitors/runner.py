"""Polling every monitor in one thread, and handing their events to the supervisor."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from airflow_grid_resume.agent.imds import ImdsDisabled, ImdsUnavailable
from airflow_grid_resume.agent.monitors.events import Monitor, StopEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    """What monitors may need from the agent's options."""

    notice_window: float = 120.0  # how far ahead of a known reclaim time a stop starts (--notice-window)


class MonitorRunner:
    """Polls each monitor every ``interval`` seconds and calls ``on_event`` with what they report. A monitor
    whose source is unavailable is retried next poll (logged at most every 30 s); one whose metadata service
    is disabled (403) is dropped; an unexpected error is logged and never stops the others."""

    def __init__(
        self, monitors: Sequence[Monitor], *, on_event: Callable[[StopEvent], None], interval: float = 1.0
    ) -> None:
        self.monitors = list(monitors)
        self.on_event = on_event
        self.interval = interval
        self.disabled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grid-monitors", daemon=True)
        self._last_error_log = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def poll_once(self, now: float | None = None) -> None:
        for monitor in list(self.monitors):
            try:
                events = monitor.poll(time.time() if now is None else now)
            except ImdsDisabled as exc:
                self.monitors.remove(monitor)
                if not self.disabled:
                    self.disabled = True
                    log.warning("%s; interruption notices will only arrive as signals to the agent", exc)
                continue
            except ImdsUnavailable as exc:
                self._log_error(f"metadata service unavailable ({monitor.name}), will retry: {exc}")
                continue
            except Exception as exc:  # never let one monitor silence the others
                self._log_error(f"unexpected error polling {monitor.name}: {exc!r}")
                continue
            for event in events:
                self.on_event(event)

    def _run(self) -> None:
        while self.monitors and not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.05, self.interval - (time.monotonic() - started)))

    def _log_error(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error_log >= 30:
            self._last_error_log = now
            log.warning(message)
        else:
            log.debug(message)
