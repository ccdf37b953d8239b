"""The conditions evaluator (pure) and the `conditions` / `windows` configuration: windows in a named zone,
DST-correct (the Europe/Amsterdam transition days of 2030), overnight windows, client networks, and the
errors at load."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from scimjit.config import ConfigError, Settings
from scimjit.config.conditions import Conditions, Window
from scimjit.entitlement import conditions

OFFICE = {"days": "Mon-Fri", "from": "07:00", "to": "19:00", "tz": "Europe/Amsterdam"}


def _conds(**raw):
    return Conditions.model_validate(raw)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_office_hours_follow_amsterdam_wall_clock_in_winter_and_summer():
    c = _conds(windows=[OFFICE])
    # Monday 2030-01-07, CET (UTC+1): 07:00-19:00 local is 06:00-18:00 UTC
    assert conditions.check(c, at("2030-01-07T05:59:59"), None).condition == "window"
    assert conditions.check(c, at("2030-01-07T06:00:00"), None) is None
    assert conditions.check(c, at("2030-01-07T17:59:59"), None) is None
    assert conditions.check(c, at("2030-01-07T18:00:00"), None).condition == "window"
    # Monday 2030-07-01, CEST (UTC+2): 05:00-17:00 UTC
    assert conditions.check(c, at("2030-07-01T05:00:00"), None) is None
    assert conditions.check(c, at("2030-07-01T17:00:00"), None) is not None
    # Saturday: closed all day
    assert conditions.check(c, at("2030-01-05T12:00:00"), None) is not None
    unmet = conditions.check(c, at("2030-01-05T12:00:00"), None)
    assert unmet.detail == "outside the allowed time window(s): Mon-Fri 07:00-19:00 Europe/Amsterdam"


def test_dst_transition_days_in_amsterdam():
    # 2030-03-31 (Sunday): 02:00 CET -> 03:00 CEST. The whole Sunday is 23 hours long.
    sunday = (
        Window.model_validate({"days": "Sun", "from": "00:00", "to": "24:00", "tz": "Europe/Amsterdam"}),
    )
    start, end = conditions.current_window(sunday, at("2030-03-31T12:00:00"))
    assert (start, end) == (at("2030-03-30T23:00:00"), at("2030-03-31T22:00:00"))
    assert end - start == timedelta(hours=23)
    # a 01:00-04:00 window that night is 2 hours of real time
    night = (
        Window.model_validate({"days": "Sun", "from": "01:00", "to": "04:00", "tz": "Europe/Amsterdam"}),
    )
    start, end = conditions.current_window(night, at("2030-03-31T00:30:00"))
    assert end - start == timedelta(hours=2)
    # 2030-10-27 (Sunday): 03:00 CEST -> 02:00 CET, a 25-hour day; 07:00 local is 06:00 UTC again
    start, end = conditions.current_window(sunday, at("2030-10-27T12:00:00"))
    assert end - start == timedelta(hours=25)
    week = (Window.model_validate({**OFFICE, "days": "*"}),)
    assert conditions.current_window(week, at("2030-10-26T05:00:00"))[0] == at("2030-10-26T05:00:00")
    assert conditions.current_window(week, at("2030-10-27T06:00:00"))[0] == at("2030-10-27T06:00:00")
    assert conditions.check(_conds(windows=[{**OFFICE, "days": "*"}]), at("2030-10-27T05:30:00"), None)


def test_overnight_window_and_next_start():
    c = _conds(windows=[{"days": "Fri", "from": "22:00", "to": "06:00", "tz": "UTC"}])
    assert conditions.check(c, at("2030-01-04T21:59:00"), None) is not None  # Friday evening
    assert conditions.check(c, at("2030-01-04T22:00:00"), None) is None
    assert conditions.check(c, at("2030-01-05T05:59:00"), None) is None  # Saturday morning: still Friday's
    assert conditions.check(c, at("2030-01-05T06:00:00"), None) is not None
    assert conditions.next_start(c.windows, at("2030-01-05T06:00:00")) == at("2030-01-11T22:00:00")


def test_touching_windows_are_one_span():
    windows = (
        Window.model_validate({"days": "Mon", "from": "07:00", "to": "24:00"}),
        Window.model_validate({"days": "Tue", "from": "00:00", "to": "07:00"}),
    )
    assert conditions.current_window(windows, at("2030-01-07T08:00:00")) == (
        at("2030-01-07T07:00:00"),
        at("2030-01-08T07:00:00"),
    )


def test_networks_v4_v6_mapped_and_unknown():
    c = _conds(networks=["10.0.0.0/8", "2001:db8::/32"])
    now = at("2030-01-07T12:00:00")
    assert conditions.check(c, now, "10.1.2.3") is None
    assert conditions.check(c, now, "::ffff:10.1.2.3") is None
    assert conditions.check(c, now, "2001:db8::1") is None
    unmet = conditions.check(c, now, "192.0.2.7")
    assert unmet.to_json() == {
        "condition": "network",
        "detail": "the client address 192.0.2.7 is not in the allowed networks: 10.0.0.0/8, 2001:db8::/32",
    }
    assert conditions.check(c, now, None).detail.startswith("the client address is unknown")
    assert conditions.check(c, now, "unknown").condition == "network"
    assert conditions.check(None, now, None) is None


def test_windows_are_checked_before_networks():
    c = _conds(windows=[OFFICE], networks=["10.0.0.0/8"])
    assert conditions.check(c, at("2030-01-05T12:00:00"), "192.0.2.1").condition == "window"
    assert conditions.check(c, at("2030-01-07T12:00:00"), "192.0.2.1").condition == "network"


POLICY = """
[[jit.policies]]
group = "prod-admins"
max_duration = "8h"
approvers = ["sre-leads"]
{extra}
"""


def _load(extra: str) -> Settings:
    return Settings.load(environ={}, document=tomllib.loads(POLICY.format(extra=extra)))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('conditions = { windows = [{ from = "07:00", to = "19:00", tz = "Mars/Olympus" }] }', "time zone"),
        ('conditions = { networks = ["10.0.0.1/8"] }', "CIDR"),
        ('conditions = { networks = ["ten"] }', "CIDR"),
        ('conditions = { windows = [{ from = "07:00", to = "07:00" }] }', "equal"),
        ('conditions = { windows = [{ from = "7", to = "19:00" }] }', "HH:MM"),
        ('conditions = { windows = [{ days = "Mon-Fry", from = "07:00", to = "19:00" }] }', "Mon-Fri"),
        ("conditions = { }", "windows"),
        ('windows = [{ from = "24:00", to = "07:00" }]', "24:00"),
        ('outside = "maybe"', "outside"),
    ],
)
def test_bad_conditions_fail_at_load(extra, message):
    with pytest.raises(ConfigError) as excinfo:
        _load(extra)
    assert message in str(excinfo.value)
    assert "jit.policies" in str(excinfo.value)


def test_outside_approval_needs_approvers():
    text = (
        '[[jit.policies]]\ngroup = "g"\nmax_duration = "1h"\nauto_approve = { max_duration = "1h" }\n'
        'outside = "approval"\nconditions = { networks = ["10.0.0.0/8"] }\n'
    )
    with pytest.raises(ConfigError, match="approvers"):
        Settings.load(environ={}, document=tomllib.loads(text))


def test_a_good_policy_shows_its_conditions():
    settings = _load(
        'conditions = { windows = [{ days = "Mon-Fri", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }],'
        ' networks = ["10.0.0.0/8"] }\noutside = "approval"\nwindows = [{ days = "Mon-Fri", from = "08:00", '
        'to = "18:00", tz = "Europe/Amsterdam" }]'
    )
    summary = settings.jit.policies[0].summary()
    assert summary["conditions"] == {"windows": [OFFICE], "networks": ["10.0.0.0/8"]}
    assert summary["outside"] == "approval"
    assert summary["windows"] == [{**OFFICE, "from": "08:00", "to": "18:00"}]
