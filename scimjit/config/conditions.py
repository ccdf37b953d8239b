"""The one `conditions` shape of `[[jit.policies]]` and `[[applications]]`: time windows and client networks.

    conditions = { windows = [{ days = "Mon-Fri", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }],
                   networks = ["10.0.0.0/8", "2001:db8::/32"] }

Everything is checked at load (an unknown zone, a bad CIDR, an empty window are errors that name the key),
so the evaluator (scimjit/entitlement/conditions.py) never meets a value it cannot use. A window whose `to`
is earlier than its `from` runs overnight: it starts on each listed day and ends on the next morning
(`days = "Fri", from = "22:00", to = "06:00"` is Friday night to Saturday 06:00). `to = "24:00"` is the end
of the day; `from == to` is refused (empty or the whole day? say `from = "00:00", to = "24:00"`).
"""

from __future__ import annotations

import ipaddress
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from scimjit.config.values import StrictModel, as_tuple, show

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = datetime.weekday()
END_OF_DAY = "24:00"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_days(text: str) -> frozenset[int]:
    """`"Mon-Fri"`, `"Sat,Sun"`, `"Mon-Wed,Fri"`, `"Fri-Mon"` (wraps) or `"*"` as weekday numbers (Mon = 0)."""
    if text.strip() == "*":
        return frozenset(range(7))
    out: set[int] = set()
    for part in text.split(","):
        ends = [p.strip().lower()[:3] for p in part.split("-")]
        if len(ends) > 2 or not all(e in DAY_NAMES for e in ends):
            raise ValueError(f'expected days such as "Mon-Fri" or "Sat,Sun", got {show(text)}')
        first, last = DAY_NAMES.index(ends[0]), DAY_NAMES.index(ends[-1])
        out.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return frozenset(out)


def parse_clock(text: str) -> time | None:
    """`"07:00"` as a time of day; `"24:00"` (the end of the day) as None."""
    if text.strip() == END_OF_DAY:
        return None
    try:
        hours, minutes = text.strip().split(":")
        if len(hours) != 2 or len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(f'expected a time of day "HH:MM" (00:00 to 24:00), got {show(text)}') from None


class Window(StrictModel):
    """One weekly time window in a named time zone (DST-correct: local wall-clock times)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    days: str = "*"
    start: str = Field(alias="from")
    end: str = Field(alias="to")
    tz: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, value: str) -> str:
        parse_days(value)
        return value

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        parse_clock(value)
        return value.strip()

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f'expected an IANA time zone such as "Europe/Amsterdam", got {show(value)}'
            ) from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if self.start == END_OF_DAY:
            raise ValueError('`from` must be a time of day before 24:00 (e.g. from = "07:00")')
        if self.start == self.end:
            raise ValueError('`from` and `to` are equal; the whole day is from = "00:00", to = "24:00"')
        return self

    @property
    def weekdays(self) -> frozenset[int]:
        return parse_days(self.days)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    def text(self) -> str:
        """How refusals and listings name it: `Mon-Fri 07:00-19:00 Europe/Amsterdam`."""
        return f"{self.days} {self.start}-{self.end} {self.tz}"

    def summary(self) -> dict[str, str]:
        return {"days": self.days, "from": self.start, "to": self.end, "tz": self.tz}


def _network(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f'expected a CIDR such as "10.0.0.0/8", got {show(value)}')
    try:
        return ipaddress.ip_network(value.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"{show(value)} is not a network in CIDR notation ({exc})") from None


class Conditions(StrictModel):
    """`conditions = { windows = [...], networks = [...] }`: all given kinds must be met (any window of the
    list, any network of the list)."""

    windows: tuple[Window, ...] = ()
    networks: tuple[str, ...] = ()

    @field_validator("windows", "networks", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return as_tuple(value)

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(_network(v)) for v in value)

    @model_validator(mode="after")
    def _something(self) -> Conditions:
        if not self.windows and not self.networks:
            raise ValueError("give `windows`, `networks` or both (or leave `conditions` out)")
        return self

    @property
    def parsed_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n) for n in self.networks)

    def summary(self) -> dict[str, Any]:
        return {"windows": [w.summary() for w in self.windows], "networks": list(self.networks)}
