"""`format_micros` is `isoformat(from_micros(...))`, only cheaper (every resource's `meta` formats two)."""

from __future__ import annotations

import random

from scimjit.clock import format_micros, from_micros, isoformat


def test_format_micros_matches_the_datetime_spelling_everywhere() -> None:
    edges = [
        0,
        1,
        999,
        1_000,
        999_000,
        999_999,
        1_000_000,
        1_000_010,
        1_764_650_000_000_000,
        1_764_650_000_000_001,
        253_402_300_799_999_999,
    ]
    rng = random.Random(13)
    values = edges + [rng.randrange(0, 4_102_444_800_000_000) for _ in range(20_000)]
    for value in values:
        assert format_micros(value) == isoformat(from_micros(value)), value
    assert format_micros(1_764_650_000_000_000) == "2025-12-02T04:33:20Z"  # no fraction when there is none
    assert format_micros(1_764_650_000_000_500) == "2025-12-02T04:33:20.000500Z"
