"""One injectable clock: UTC, timezone-aware. Tests pass a `FrozenClock` instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **kwargs: float) -> datetime:
        self._now += timedelta(seconds=seconds, **kwargs)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


def to_micros(when: datetime) -> int:
    """Epoch microseconds: how timestamps are stored, so comparisons are plain integer comparisons in any SQL."""
    if when.tzinfo is None:
        raise ValueError("naive datetime")
    delta = when - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def format_micros(value: int) -> str:
    """`isoformat(from_micros(value))` (RFC 3339 UTC with `Z`, fraction only when there is one), at a sixth of
    its cost: every resource's `meta` has one or two, so a page of 100 users formats up to 200. The seconds'
    text is formatted once per distinct second (`_SECONDS`), the fraction from two table lookups."""
    seconds, micros = divmod(value, 1_000_000)
    head = _SECONDS.get(seconds)
    if head is None:
        head = _second_text(seconds)
    if not micros:
        return f"{head}Z"
    millis, micros = divmod(micros, 1000)
    return f"{head}.{_DIGITS[millis]}{_DIGITS[micros]}Z"


_SECONDS: dict[int, str] = {}  # epoch second -> its text; emptied when full (a few thousand seconds)
_DIGITS = tuple(f"{i:03d}" for i in range(1000))


def _second_text(epoch_second: int) -> str:
    if len(_SECONDS) >= 4096:
        _SECONDS.clear()
    text = _SECONDS[epoch_second] = (EPOCH + timedelta(seconds=epoch_second)).strftime("%Y-%m-%dT%H:%M:%S")
    return text


def isoformat(when: datetime) -> str:
    """RFC 3339 with a `Z`, as SCIM clients expect."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
