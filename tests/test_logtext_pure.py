"""Session output to task log lines: carriage-return redraws split and collapsed (pure)."""

from __future__ import annotations

from airflow_grid_resume.logtext import MAX_LINE, complete_cut, log_lines


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
