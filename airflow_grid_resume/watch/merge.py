"""One session's output from two sources, in order and each byte once: the live messages
(ledger/live.py; repeated, reordered or lost at times) and the S3 log chunks (complete, later).

Pure: fragments ``(offset, bytes)`` go in, the bytes that continue the output come out.
"""

from __future__ import annotations

# Fragments held beyond a gap (a lost or late message) until S3 fills it: at most this many bytes;
# beyond that the newest are dropped, since S3 has them too.
MAX_AHEAD = 8 * 1024 * 1024


class OutputMerge:
    """``expected`` is the offset of the next byte the task log needs."""

    def __init__(self, expected: int, max_ahead: int = MAX_AHEAD) -> None:
        self.expected = expected
        self.max_ahead = max_ahead
        self._ahead: dict[int, bytes] = {}  # offset -> bytes, each starting after ``expected``
        self._ahead_bytes = 0
        self.repeated = 0  # bytes that arrived twice (duplicates, or S3 reading what a message brought)

    def add(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if end <= self.expected:
            self.repeated += len(data)
            return
        if offset < self.expected:  # overlaps what is already out: keep the new part
            self.repeated += self.expected - offset
            data, offset = data[self.expected - offset :], self.expected
        held = self._ahead.get(offset)
        if held is not None and len(held) >= len(data):
            self.repeated += len(data)
            return
        if self._ahead_bytes + len(data) - len(held or b"") > self.max_ahead and offset > self.expected:
            return
        self._ahead_bytes += len(data) - len(held or b"")
        self._ahead[offset] = data

    def take(self) -> bytes:
        """The bytes from ``expected`` on that are here (advancing ``expected`` past them)."""
        out = bytearray()
        while self._ahead:
            progressed = False
            for offset in sorted(self._ahead):
                if offset > self.expected:
                    break
                data = self._drop(offset)
                cut = self.expected - offset
                if cut < len(data):
                    out += data[cut:]
                    self.expected += len(data) - cut
                    progressed = True
                else:
                    self.repeated += len(data)
            if not progressed:
                break
        return bytes(out)

    def advance(self, offset: int) -> None:
        """The task log already has everything before ``offset`` (a watch resumed from watch.json)."""
        self.expected = max(self.expected, offset)

    def waiting(self) -> bool:
        """Are bytes held beyond a gap (the watch then reads S3 to fill it)?"""
        return bool(self._ahead)

    def _drop(self, offset: int) -> bytes:
        data = self._ahead.pop(offset)
        self._ahead_bytes -= len(data)
        return data
