"""Every duration the access API and CLI accept is range-checked (issue 11 §1b): `1e300`, `inf`, `nan` and
negatives are refused with the JIT error shape (HTTP) or `error: …` and exit 2 (CLI), and so is a window
whose end is more than 100 years away (a far `startsAt` plus a duration, or a century of extensions), which
used to overflow datetimes and answer 500."""

from __future__ import annotations

import pytest

from scimjit.cli import main
from tests.cli.test_jit_access_cli import cli  # noqa: F401 (the fixture)
from tests.http.test_jit_access_http import api, approvals, issuer  # noqa: F401 (the fixtures)

FAR = "9999-12-01T00:00:00Z"


@pytest.mark.parametrize("duration", [1e300, "1e300", "inf", "nan", -5, "-5s", "1000000d", "1e400"])
def test_out_of_range_durations_are_refused(api, duration):  # noqa: F811
    for path, body in (
        ("/grants", {"user": "alice", "group": "prod-admins", "duration": duration}),
        ("/requests", {"user": "alice", "group": "prod-admins", "duration": duration, "justification": "x"}),
    ):
        r = api.post(path, body)
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"] == "invalid_request" and "duration" in r.json()["detail"]
    assert api.get("/grants").json()["totalResults"] == 0
    assert api.get("/requests").json()["totalResults"] == 0


def test_a_grant_that_would_end_past_the_horizon_is_refused(api):  # noqa: F811
    r = api.post("/grants", {"user": "alice", "group": "prod-admins", "duration": "100d", "startsAt": FAR})
    assert r.status_code == 400 and r.json() == {
        "error": "invalid_request",
        "detail": "the grant must end within 100 years from now",
    }
    r = api.post("/grants", {"user": "alice", "group": "prod-admins", "expiresAt": "9999-12-31T23:59:59Z"})
    assert r.status_code == 400 and "within 100 years" in r.json()["detail"]
    assert api.get("/grants").json()["totalResults"] == 0


def test_extending_a_grant_again_and_again_stops_at_the_horizon(api):  # noqa: F811
    grant = api.post("/grants", {"user": "alice", "group": "prod-admins", "duration": "1h"}).json()
    r = api.post(f"/grants/{grant['id']}/extend", {"duration": "36500d"})  # a century: still in range
    assert r.status_code == 200
    extended = r.json()["expiresAt"]
    r = api.post(f"/grants/{grant['id']}/extend", {"duration": "36500d"})
    assert r.status_code == 400 and "within 100 years" in r.json()["detail"]
    assert api.get(f"/grants/{grant['id']}").json()["expiresAt"] == extended  # left where it was


def test_a_request_that_would_end_past_the_horizon_is_refused(api):  # noqa: F811
    body = {"user": "alice", "group": "prod-admins", "duration": "1h", "justification": "x", "startsAt": FAR}
    r = api.post("/requests", body)
    assert r.status_code == 400 and "within 100 years" in r.json()["detail"]
    assert api.get("/requests").json()["totalResults"] == 0


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-1", "0", "soon"])
def test_the_sweep_interval_flag_is_a_checked_duration(cli, capsys, value):  # noqa: F811
    with pytest.raises(SystemExit) as exited:
        main(["sweep", "--interval", value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument --interval: expected" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["1e300", "inf", "-1h"])
def test_cli_grant_durations_are_checked(cli, value):  # noqa: F811
    code, _, err = cli("grants", "create", "--user", "alice", "--group", "prod-admins", f"--duration={value}")
    assert code == 2 and err.startswith("error: ") and "duration" in err and "Traceback" not in err
