"""`scimjit requests policies` and `scimjit apps list` show the policies' and applications' conditions (the
file alone: no database), and a bad condition is one `config error:` line naming the key."""

from __future__ import annotations

import json

from scimjit.cli import main
from tests.access_helpers import CONFIG

POLICY = """
[[jit.policies]]
group = "prod-admins"
max_duration = "8h"
approvers = ["sre-leads"]
outside = "approval"
windows = [{ days = "Mon-Fri", from = "08:00", to = "18:00", tz = "Europe/Amsterdam" }]
conditions = { windows = [{ days = "Mon-Fri", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }], networks = ["10.0.0.0/8"] }
"""


def _write(tmp_path, monkeypatch, jit: str, app_extra: str = "") -> None:
    text = CONFIG.format(
        issuer="http://127.0.0.1:9",
        webhook="http://127.0.0.1:9/events",
        on_unentitled="disable",
        grace="0s",
        jit=jit,
    )
    text = text.replace('grace_period = "0s"\n', f'grace_period = "0s"\n{app_extra}\n', 1)
    path = tmp_path / "scimjit.toml"
    path.write_text(text)
    monkeypatch.setenv("SCIMJIT_CONFIG", str(path))


def test_policies_and_apps_show_their_conditions(tmp_path, monkeypatch, capsys):
    _write(tmp_path, monkeypatch, POLICY, 'conditions = { networks = ["10.0.0.0/8"] }')
    assert main(["requests", "policies"]) == 0
    out = capsys.readouterr().out
    assert "Mon-Fri 07:00-19:00 Europe/Amsterdam; 10.0.0.0/8" in out
    assert "approval" in out and "Mon-Fri 08:00-18:00 Europe/Amsterdam" in out
    assert main(["requests", "policies", "--json"]) == 0
    [policy] = json.loads(capsys.readouterr().out)
    assert policy["outside"] == "approval"
    assert policy["conditions"]["networks"] == ["10.0.0.0/8"]
    assert main(["apps", "list"]) == 0
    out = capsys.readouterr().out
    assert "conditions" in out and "10.0.0.0/8" in out


def test_a_bad_condition_is_one_config_error_line(tmp_path, monkeypatch, capsys):
    _write(tmp_path, monkeypatch, POLICY.replace("Europe/Amsterdam", "Europe/Atlantis", 1))
    assert main(["requests", "policies"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error:") and "Europe/Atlantis" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
