"""watch/merge.py: one session's output from two sources, in order and each byte once. Pure: no server."""

from __future__ import annotations

import random

from airflow_grid_resume.watch.merge import OutputMerge


def test_the_merge_puts_fragments_in_order_and_drops_repeats() -> None:
    merge = OutputMerge(expected=10)
    merge.add(20, b"KLMNO")  # ahead of a gap: held
    assert merge.take() == b"" and merge.waiting()
    merge.add(0, b"0123456789")  # already out
    merge.add(10, b"ABCDEFGHIJ")  # fills the gap
    assert merge.take() == b"ABCDEFGHIJKLMNO" and merge.expected == 25
    merge.add(22, b"MNOPQ")  # overlaps what is out: only the new part
    merge.add(25, b"PQ")  # a duplicate of that part
    assert merge.take() == b"PQ" and merge.expected == 27 and not merge.waiting()
    assert merge.repeated == 10 + 3 + 2


def test_the_merge_gives_every_byte_once_whatever_the_order_and_repeats() -> None:
    stream = bytes(random.Random(7).getrandbits(8) for _ in range(5000))
    for seed in range(20):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(stream)), 40))
        fragments = [(a, stream[a:b]) for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        # S3's view: bigger chunks with their own boundaries, arriving late
        s3 = [(a, stream[a : a + 1500]) for a in range(0, len(stream), 1500)]
        arrivals = fragments + rng.sample(fragments, 10) + s3
        rng.shuffle(arrivals)
        merge, out = OutputMerge(0), bytearray()
        for offset, data in arrivals:
            merge.add(offset, data)
            out += merge.take()
        assert bytes(out) == stream, seed


def test_the_merge_holds_a_bounded_amount_beyond_a_gap() -> None:
    merge = OutputMerge(0, max_ahead=100)
    merge.add(10, b"x" * 80)
    merge.add(200, b"y" * 80)  # over the bound: dropped (S3 brings it later)
    merge.add(0, b"a" * 10)
    assert merge.take() == b"a" * 10 + b"x" * 80 and not merge.waiting()
