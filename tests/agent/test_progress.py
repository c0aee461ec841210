"""The progress protocol's parser and tracker, without servers."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_grid_resume.agent.progress import (
    Progress,
    ProgressTracker,
    format_progress,
    parse_progress,
    steps_lost,
)


def steps(doc: dict | None) -> dict | None:
    """The steps of a progress report, without when they were read (epoch seconds, tested on their own)."""
    return None if doc is None else {k: v for k, v in doc.items() if not k.endswith("_at")}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("grid-resume: progress 3/10", Progress(3, 10)),
        ("grid-resume: progress 7", Progress(7, None)),
        ("grid-resume: progress 0/5\n", Progress(0, 5)),
        ("grid-resume: progress 12/40  \r\n", Progress(12, 40)),
        ("INFO 2026-12-01 train: grid-resume: progress 4/9", Progress(4, 9)),  # a logging prefix
        ("[rank 0] grid-resume: progress 4", Progress(4, None)),
        ("grid-resume: progress 007/010", Progress(7, 10)),
    ],
)
def test_progress_lines_are_read(line: str, expected: Progress) -> None:
    assert parse_progress(line) == expected


@pytest.mark.parametrize(
    "line",
    [
        "",
        "step 3/10",
        "grid-resume: progress",
        "grid-resume: progress x/10",
        "grid-resume: progress -3/10",
        "grid-resume: progress 3.5/10",
        "grid-resume: progress 3/0",  # no step count is zero
        "grid-resume: progress 3/10 loss=0.5",  # nothing but whitespace after the numbers
        "grid-resume:progress 3/10",
        "Grid-Resume: Progress 3/10",
        "my-grid-resume: progress 3/10",  # the marker must not be the end of another word
        "grid-resume-progress 3",
    ],
)
def test_other_lines_are_not_progress(line: str) -> None:
    assert parse_progress(line) is None


def test_format_round_trips() -> None:
    assert parse_progress(format_progress(5, 20)) == Progress(5, 20)
    assert parse_progress(format_progress(5)) == Progress(5, None)


def test_tracker_reports_nothing_before_a_progress_line() -> None:
    tracker = ProgressTracker()
    tracker.feed(b"epoch 1 loss 0.3\n")
    assert tracker.heartbeat() is None and tracker.outcome() is None


def test_tracker_keeps_first_and_latest_of_the_session() -> None:
    tracker = ProgressTracker()
    tracker.feed(b"resumed\ngrid-resume: progress 41/100\nloss 1\ngrid-resume: progress 42/100\n")
    tracker.feed(b"grid-resume: progress 43/100\n")
    assert steps(tracker.heartbeat()) == {"done": 43, "total": 100, "first": 41}
    assert steps(tracker.outcome()) == {"first": 41, "last": 43, "total": 100}


def test_lines_split_across_reads_and_streams() -> None:
    tracker = ProgressTracker()
    # stdout's line arrives in three pieces while stderr writes its own lines in between
    tracker.feed(b"grid-resu", stream=0)
    tracker.feed(b"warning: slow\n", stream=1)
    tracker.feed(b"me: progress 1", stream=0)
    assert tracker.heartbeat() is None  # unfinished: "1" may still become "17"
    tracker.feed(b"7/20\n", stream=0)
    assert steps(tracker.heartbeat()) == {"done": 17, "total": 20, "first": 17}
    tracker.feed(b"grid-resume: progress 18/20\n", stream=1)
    assert steps(tracker.heartbeat()) == {"done": 18, "total": 20, "first": 17}


def test_carriage_return_updates_count_each() -> None:
    tracker = ProgressTracker()
    # tqdm-style: one terminal line rewritten with \r, never a \n
    tracker.feed(b"".join(b"\rgrid-resume: progress %d/50" % i for i in range(1, 31)))
    assert steps(tracker.heartbeat()) == {"done": 29, "total": 50, "first": 1}  # the 30th is still unfinished
    tracker.feed(b"\r")
    assert steps(tracker.heartbeat()) == {"done": 30, "total": 50, "first": 1}


def test_an_unfinished_last_line_counts_when_output_ends() -> None:
    tracker = ProgressTracker()
    tracker.feed(b"grid-resume: progress 9/9")
    tracker.close()
    assert steps(tracker.outcome()) == {"first": 9, "last": 9, "total": 9}


def test_a_huge_line_does_not_grow_memory_and_its_end_still_counts() -> None:
    tracker = ProgressTracker()
    for _ in range(100):
        tracker.feed(b"x" * 100_000)
    tracker.feed(b" grid-resume: progress 5/6\n")
    assert steps(tracker.heartbeat()) == {"done": 5, "total": 6, "first": 5}
    assert all(len(v) <= 4096 for v in tracker._pending.values())


def test_total_is_kept_from_an_earlier_line() -> None:
    tracker = ProgressTracker()
    tracker.feed(b"grid-resume: progress 1/10\ngrid-resume: progress 2\n")
    assert steps(tracker.heartbeat()) == {"done": 2, "total": 10, "first": 1}


def test_feeding_from_another_thread_while_reading() -> None:
    tracker = ProgressTracker()

    def feed() -> None:
        for i in range(1, 2001):
            tracker.feed(b"grid-resume: progress %d/2000\n" % i)

    thread = threading.Thread(target=feed)
    thread.start()
    seen = []
    while thread.is_alive():
        beat = tracker.heartbeat()
        if beat:
            seen.append(beat["done"])
    thread.join()
    assert seen == sorted(seen)
    assert steps(tracker.outcome()) == {"first": 1, "last": 2000, "total": 2000}


@pytest.mark.parametrize(
    ("last", "first_next", "lost"),
    [(40, 41, 0), (40, 31, 10), (40, 1, 40), (None, 5, None), (40, None, None), (40, 45, 0)],
)
def test_steps_lost_by_an_interruption(last, first_next, lost) -> None:
    assert steps_lost(last, first_next) == lost


def test_progress_reports_say_when_the_first_and_latest_lines_were_read() -> None:
    """A deadline= run measures its pace from them (run/pace.py)."""
    before = time.time()
    tracker = ProgressTracker()
    tracker.feed(b"grid-resume: progress 4/10\n")
    tracker.feed(b"grid-resume: progress 6/10\n")
    beat, out = tracker.heartbeat(), tracker.outcome()
    assert beat is not None and out is not None
    assert before <= beat["first_at"] <= beat["done_at"] <= time.time()
    assert (out["first_at"], out["last_at"]) == (beat["first_at"], beat["done_at"])
