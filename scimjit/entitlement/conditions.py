"""The conditions evaluator: is `now` inside a policy's or an application's time windows, is the client
inside its networks? Pure (no SQL, no clock of its own): the caller passes the instant and the address.

Windows are wall-clock times in a named zone, so each occurrence is built from the local date and then
converted to UTC: a Monday-Friday 07:00-19:00 Europe/Amsterdam window is 06:00-18:00 UTC in winter and
05:00-17:00 UTC in summer, and on the day the clocks change it is 12 or 10 hours long, not 11. A local time
that does not exist (02:30 on the spring-forward night) is read with the offset before the change, as
PEP 495 does (so it falls an hour later on the new clock); one that exists twice is its first occurrence.

Grant windows use `current_window` (the end of the window `now` is in: the membership row's `expires_at`)
and `next_start` (when the sweeper must add it back).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from scimjit.config.conditions import Conditions, Window, parse_clock

WINDOW = "window"
NETWORK = "network"


@dataclass(frozen=True, slots=True)
class Unmet:
    """Which condition failed (`window` or `network`) and a sentence saying why, for the refusal's detail
    and the audit record."""

    condition: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"condition": self.condition, "detail": self.detail}


def check(conditions: Conditions | None, now: datetime, client_ip: str | None) -> Unmet | None:
    """None when every configured condition holds at `now` for `client_ip`, else the first one that does
    not (windows first, then networks). An absent or unparsable address never meets a network condition."""
    if conditions is None:
        return None
    if conditions.windows and current_window(conditions.windows, now) is None:
        listed = "; ".join(w.text() for w in conditions.windows)
        return Unmet(WINDOW, f"outside the allowed time window(s): {listed}")
    if conditions.networks:
        listed = ", ".join(conditions.networks)
        if not client_ip:
            return Unmet(NETWORK, f"the client address is unknown; allowed networks: {listed}")
        try:
            address = ipaddress.ip_address(client_ip.strip())
        except ValueError:
            return Unmet(NETWORK, f"the client address {client_ip!r} is not an IP address")
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:10.1.2.3 from a dual-stack socket is 10.1.2.3
        if not any(address in net for net in conditions.parsed_networks):
            return Unmet(NETWORK, f"the client address {address} is not in the allowed networks: {listed}")
    return None


def occurrences(window: Window, around: datetime) -> Iterator[tuple[datetime, datetime]]:
    """(start, end) in UTC of the window's occurrences starting on the local dates from the day before
    `around` to a week after it, in order: enough to find the one `around` is in and the next one."""
    zone = window.zone
    begin, finish = parse_clock(window.start), parse_clock(window.end)
    assert begin is not None  # `from = "24:00"` is refused at load
    today = around.astimezone(zone).date()
    days = window.weekdays
    for offset in range(-1, 9):
        day = today + timedelta(days=offset)
        if day.weekday() not in days:
            continue
        start = datetime.combine(day, begin, tzinfo=zone)
        if finish is None:
            end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
        elif finish <= begin:  # overnight: ends the next morning
            end = datetime.combine(day + timedelta(days=1), finish, tzinfo=zone)
        else:
            end = datetime.combine(day, finish, tzinfo=zone)
        yield start.astimezone(UTC), end.astimezone(UTC)


def current_window(windows: Sequence[Window], now: datetime) -> tuple[datetime, datetime] | None:
    """The span of window time `now` is in, as (start, end) in UTC, or None outside every window.
    Overlapping or touching occurrences (Mon-Fri 07:00-24:00 and 00:00-07:00) are one span, so a grant's
    access does not blink off and on at their seam."""
    now = now.astimezone(UTC)
    spans = sorted(o for w in windows for o in occurrences(w, now))
    found: tuple[datetime, datetime] | None = None
    for start, end in spans:
        if found is None:
            if start <= now < end:
                found = (start, end)
        elif start <= found[1]:
            found = (found[0], max(found[1], end))
        else:
            break
    return found


def next_start(windows: Sequence[Window], after: datetime) -> datetime | None:
    """The first window start at or after `after` (UTC), or None when the windows name no day at all."""
    after = after.astimezone(UTC)
    starts = [s for w in windows for s, _ in occurrences(w, after) if s >= after]
    return min(starts) if starts else None
