"""The session's output as task log lines: pure functions used where the run watch turns log
chunks into lines (``triggers/run.py``).

A task-log record holds the lines that arrived together (up to ``RECORD_LINES`` lines or
``RECORD_CHARS`` characters), not one line each: Airflow's log view shows a record's lines one under
the other (its event text is rendered ``white-space: pre-wrap``), and each record costs the triggerer
about 20 us of structlog processing, an eighth of the CPU of a triggerer watching 1,000 runs at one
record per line (docs/benchmarks.md).

Progress bars (tqdm and the like) redraw one terminal line with ``\\r`` and no ``\\n``; a line-based
log would hold them as one line of megabytes, shown only when a ``\\n`` finally comes. Here a ``\\r``
ends a line too, and the redraws that arrived together collapse to the newest one.
"""

from __future__ import annotations

# Output with neither \n nor \r for this long is logged anyway, in pieces of at most this size.
MAX_LINE = 64 * 1024
# A task-log record holds at most this many lines, and more characters only when one line is longer.
RECORD_LINES = 100
RECORD_CHARS = 32 * 1024


def complete_cut(buffer: bytes) -> int:
    """How many bytes of ``buffer`` form complete lines (ended by ``\\n`` or ``\\r``), 0 if none;
    an unended run longer than ``MAX_LINE`` counts as complete."""
    cut = max(buffer.rfind(b"\n"), buffer.rfind(b"\r")) + 1
    if cut == len(buffer) and buffer.endswith(b"\r"):
        cut -= 1  # a \r\n may be arriving in two pieces: keep the \r until the next byte says
    return cut if cut > 0 or len(buffer) < MAX_LINE else len(buffer)


def log_lines(text: str) -> list[str]:
    """Lines to log: one per ``\\n``-ended line (blank ones kept), its ``\\r`` redraws collapsed to the
    newest non-empty one, and no line longer than ``MAX_LINE`` characters."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        redraws = [part for part in line.split("\r") if part]
        latest = redraws[-1] if redraws else ""
        out += [latest[i : i + MAX_LINE] for i in range(0, len(latest), MAX_LINE)] or [""]
    if text.endswith("\n"):
        out.pop()  # the text's own last line end, not an empty line after it
    return out


def log_records(lines: list[str]) -> list[str]:
    """``lines`` joined by ``\n`` into task-log records of at most ``RECORD_LINES`` lines and
    ``RECORD_CHARS`` characters (a longer line is a record of its own), in order."""
    records: list[str] = []
    group: list[str] = []
    size = 0
    for line in lines:
        if group and (len(group) >= RECORD_LINES or size + 1 + len(line) > RECORD_CHARS):
            records.append("\n".join(group))
            group, size = [], 0
        size += len(line) + (1 if group else 0)
        group.append(line)
    if group:
        records.append("\n".join(group))
    return records
