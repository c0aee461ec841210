"""Session output to task log lines and records: carriage-return redraws split and collapsed (pure)."""

from __future__ import annotations

from airflow_grid_resume.logtext import MAX_LINE, RECORD_CHARS, RECORD_LINES, complete_cut, log_lines, log_records


def test_redraws_collapse_to_the_newest_and_lines_keep_their_order() -> None:
    text = "epoch 1\n\r 10%|#  | 1/10\r 20%|## | 2/10\r 30%|###| 3/10\nsaved\n\nend\n"
    assert log_lines(text) == ["epoch 1", " 30%|###| 3/10", "saved", "", "end"]
    assert log_lines("a\r\nb\r\n") == ["a", "b"]


def test_a_progress_bar_without_newlines_is_logged_as_it_goes() -> None:
    stream = b"".join(f"\r{i}/1000".encode() for i in range(1, 1001))
    cut = complete_cut(stream)
    assert 0 < cut < len(stream)  # everything up to the newest redraw, which may still grow
    assert log_lines(stream[:cut].decode()) == ["999/1000"]
    assert complete_cut(b"partial line") == 0
    assert complete_cut(b"line\r") == 4  # the \r waits: it may be the first half of \r\n
    assert complete_cut(b"x" * MAX_LINE) == MAX_LINE  # no line end for too long: logged anyway


def test_no_line_is_longer_than_the_limit() -> None:
    lines = log_lines("y" * (2 * MAX_LINE + 5) + "\n")
    assert [len(x) for x in lines] == [MAX_LINE, MAX_LINE, 5]


def test_records_hold_the_lines_that_came_together_in_order_and_bounded() -> None:
    assert log_records(["epoch 1", "", "saved"]) == ["epoch 1\n\nsaved"]  # blank lines kept
    assert log_records([]) == []
    burst = [f"step {i}" for i in range(2 * RECORD_LINES + 1)]
    records = log_records(burst)
    assert [r.count("\n") + 1 for r in records] == [RECORD_LINES, RECORD_LINES, 1]
    assert "\n".join(records).split("\n") == burst
    wide = ["a" * (RECORD_CHARS // 2), "b" * (RECORD_CHARS // 2), "c" * MAX_LINE, "d"]
    records = log_records(wide)
    assert records == [wide[0], wide[1], wide[2], "d"]  # none over the limit unless one line is
    assert all(len(r) <= RECORD_CHARS for r in records if "c" not in r)
