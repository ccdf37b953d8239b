"""The configuration model: every key typed, unknown keys and wrong types rejected with one line that names the
file (or variable) and the key, one duration type, and a full file loading to the same values as before."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from scimjit.config import MAX_DURATION, ConfigError, JitSettings, Settings, parse_duration
from scimjit.entitlement.apps import build_applications, load_applications
from scimjit.entitlement.policies import AccessSettings

APP = """
[[applications]]
name = "wiki"
issuer = "https://idp.example.com"
audience = ["wiki"]
match = { claim = "preferred_username", attribute = "userName" }
[applications.connector]
type = "webhook"
url = "https://wiki.example.com/hook"
secret = "change-me"
"""

POLICY = """
[[jit.policies]]
group = "prod-admins"
max_duration = "8h"
approvers = ["sre-leads"]
"""


def load_text(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "scimjit.toml"
    path.write_text(text)
    return Settings.load(environ={"SCIMJIT_CONFIG": str(path), **(environ or {})})


def error_of(text: str, tmp_path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_text(text, tmp_path, environ)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ wrong types


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[server]\nmax_page_size = "10"', '[server] max_page_size: expected an integer, got "10"'),
        ('[server]\nrun_worker = "false"', '[server] run_worker: expected true or false, got "false"'),
        ("[server]\nrun_sweeper = 0", "[server] run_sweeper: expected true or false, got 0"),
        ("[server]\nmax_body_bytes = 1.5", "[server] max_body_bytes: expected an integer, got 1.5"),
        ("[server]\nmax_page_size = true", "[server] max_page_size: expected an integer, got true"),
        (
            '[server]\nrate_limit_per_second = "50"',
            '[server] rate_limit_per_second: expected a number, got "50"',
        ),
        ("[server]\ndatabase_url = 5", "[server] database_url: expected a string, got 5"),
        ('[server]\nschemas_dirs = "/a"', '[server] schemas_dirs: expected a list, got "/a"'),
        ("[server]\nmax_page_size = 0", "[server] max_page_size: expected greater than or equal to 1, got 0"),
        ('[server]\nstrict_attributes = "yes"', "[server] strict_attributes: expected true or false"),
        ('[server]\naudit_retention = "forever"', "[server] audit_retention: expected a duration"),
        ("[server]\nclient_rate_limit_burst = -1", "[server] client_rate_limit_burst: expected greater than"),
        ('[jit]\noutbox_max_attempts = "3"', '[jit] outbox_max_attempts: expected an integer, got "3"'),
        ('[jit]\nclock_skew = "soon"', "[jit] clock_skew: expected a duration"),
        ("[jit]\nreconcile_interval = true", "[jit] reconcile_interval: expected a duration"),
        ("[jit]\nsweep_batch_size = 0", "[jit] sweep_batch_size: expected greater than or equal to 1"),
        ("[jit]\nnotify_applications = [1]", "[jit] notify_applications.0: expected a string, got 1"),
        (
            '[jit]\nmembership_ttl = { "g" = "0s" }',
            "[jit] membership_ttl: membership_ttl.g must be at least 1s",
        ),
        ("jit = 3", "[jit]: expected a table, got 3"),
        ('[[applications]]\nname = "x"', "[[applications]] 'x' match: required"),
        (  # issuer may be left out only for a SAML application ([applications.saml])
            APP.replace('issuer = "https://idp.example.com"\n', ""),
            "[[applications]] 'wiki': set `issuer` and `audience` (OIDC), or an [applications.saml] table",
        ),
        (
            APP.replace('audience = ["wiki"]\n', ""),
            "[[applications]] 'wiki': `audience`: expected the OIDC client id(s) whose ID tokens are accepted",
        ),
        (
            APP.replace('audience = ["wiki"]', "audience = 5"),
            "[[applications]] 'wiki' audience: expected a list, got 5",
        ),
        (
            APP.replace('name = "wiki"', 'name = "wiki"\nasync_create = "true"'),
            "[[applications]] 'wiki' async_create: expected true or false",
        ),
        (
            APP.replace('name = "wiki"', 'name = "wiki"\non_first_login = "maybe"'),
            """[[applications]] 'wiki' on_first_login: expected "create" or "link", got "maybe\"""",
        ),
        (
            APP.replace('name = "wiki"', 'name = "wiki"\nroles = { Admins = 3 }'),
            "[[applications]] 'wiki' roles.Admins: expected a list, got 3",
        ),
        (APP.replace('claim = "preferred_username"', "claim = 1"), "'wiki' match.claim: expected a string"),
        (
            APP.replace('name = "wiki"', 'name = "wiki"\ngroups = "wiki-users"'),
            "[[applications]] 'wiki' groups: expected a list, got \"wiki-users\"",
        ),
        (APP.replace('name = "wiki"', "name = 7"), "[[applications]] #1 name: expected a string, got 7"),
        ('[[applications]]\nconnector = "webhook"', "[[applications]] #1 name: required (and"),
        (POLICY.replace('max_duration = "8h"', "max_duration = -5"), "'prod-admins' max_duration: expected"),
        (
            POLICY + "approvals_required = 1.0",
            "'prod-admins' approvals_required: expected an integer, got 1.0",
        ),
        (POLICY + 'auto_approve = "1h"', "[[jit.policies]] 'prod-admins' auto_approve: expected a table"),
        ("[[jit.policies]]\ngroup = 5", "[[jit.policies]] #1 group: expected a string, got 5"),
    ],
)
def test_wrong_types_name_the_file_the_key_and_what_was_expected(text, expected, tmp_path):
    message = error_of(text, tmp_path)
    assert message.startswith(f"{tmp_path / 'scimjit.toml'}: ")
    assert expected in message


def test_builtin_connector_settings_are_typed(tmp_path):
    settings = load_text(APP.replace('secret = "change-me"', 'secret = "s"\ntimeout = true'), tmp_path)
    with pytest.raises(ConfigError, match=r"application 'wiki': connector.timeout: expected a duration"):
        build_applications(settings.applications)
    settings = load_text(APP.replace('secret = "change-me"', 'secret = "s"\nheaders = { X-A = 1 }'), tmp_path)
    with pytest.raises(
        ConfigError, match=r"application 'wiki': connector.headers.X-A: expected a string, got 1"
    ):
        build_applications(settings.applications)
    settings = load_text(
        APP.replace('type = "webhook"', 'type = "scim"\ntoken = "t"\ncreate_groups = 1'), tmp_path
    )
    with pytest.raises(ConfigError, match=r"connector\.create_groups: expected true or false, got 1"):
        build_applications(settings.applications)


# ------------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nmax_page_sise = 10", "[server] max_page_sise: unknown key; known keys: "),
        ("[server]\nraw = { jit = {} }", "[server] raw: unknown key"),
        ('[jit]\nclock_skw = "1m"', "[jit] clock_skw: unknown key; known keys: "),
        (
            APP.replace('name = "wiki"', 'name = "wiki"\ngrace_perod = "1d"'),
            "[[applications]] 'wiki' grace_perod: unknown key",
        ),
        (
            APP.replace('attribute = "userName"', 'attribute = "userName", x = 1'),
            "'wiki' match.x: unknown key; known keys: attribute, claim",
        ),
        (POLICY + 'approver = ["x"]', "[[jit.policies]] 'prod-admins' approver: unknown key"),
        (
            POLICY + 'auto_approve = { max_duration = "1h", whom = [] }',
            "'prod-admins' auto_approve.whom: unknown key",
        ),
        (
            "[sever]\nbase_url = ''",
            "sever: unknown key; known keys: applications, authorization_servers, console, jit, notifications, server",
        ),
    ],
)
def test_unknown_keys_stop_the_load(text, expected, tmp_path):
    assert expected in error_of(text, tmp_path)


def test_the_parsed_file_is_not_a_setting():
    """`raw` used to be an attribute holding the whole TOML; now it is nothing, from any source."""
    with pytest.raises(ConfigError, match=r"^\[server\] raw: unknown key"):
        Settings.load(environ={}, document={"server": {"raw": {}}})
    with pytest.raises(ConfigError, match="raw: unknown key"):
        Settings.load(environ={}, raw={})
    assert not hasattr(Settings.load(environ={}), "raw")


def test_semantic_checks_still_name_the_key(tmp_path):
    assert "issuer: the URL must be an https:// URL" in error_of(
        APP.replace("https://idp.example.com", "http://idp.example.com"), tmp_path
    )
    assert "'wiki' algorithms: ['HS256'] not allowed" in error_of(
        APP.replace('name = "wiki"', 'name = "wiki"\nalgorithms = ["HS256"]'), tmp_path
    )
    assert "application 'wiki': the name is used twice" in error_of(APP + APP, tmp_path)
    assert "group 'prod-admins' has two policies" in error_of(POLICY + POLICY, tmp_path)
    assert "'prod-admins': name the approvers group(s)" in error_of(
        POLICY.replace('approvers = ["sre-leads"]', ""), tmp_path
    )


def test_a_file_that_cannot_be_read_or_parsed_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the file named by SCIMJIT_CONFIG"):
        Settings.load(environ={"SCIMJIT_CONFIG": str(tmp_path / "missing.toml")})
    assert "not valid TOML" in error_of("[server\nx = 1", tmp_path)


# ------------------------------------------------------------------ environment variables


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
    ],
)
def test_env_booleans(word, value):
    assert Settings.load(environ={"SCIMJIT_RUN_WORKER": word}).run_worker is value


def test_env_values_are_parsed_by_type_and_wrong_ones_name_the_variable():
    s = Settings.load(
        environ={
            "SCIMJIT_MAX_PAGE_SIZE": "10",
            "SCIMJIT_RATE_LIMIT_PER_SECOND": "0",
            "SCIMJIT_CLIENT_RATE_LIMIT_PER_SECOND": "2.5",
            "SCIMJIT_STRICT_ATTRIBUTES": "true",
            "SCIMJIT_AUDIT_RETENTION": "90d",
            "SCIMJIT_SWEEP_INTERVAL": "500ms",
            "SCIMJIT_SCHEMAS_DIRS": f"/a{os.pathsep}/b",
            "SCIMJIT_LOG_LEVEL": "debug",
        }
    )
    assert (s.max_page_size, s.rate_limit_per_second, s.client_rate_limit_per_second) == (10, 0.0, 2.5)
    assert (s.strict_attributes, s.audit_retention, s.sweep_interval) == (True, 90 * 86400, 0.5)
    assert (s.schemas_dirs, s.log_level) == ([Path("/a"), Path("/b")], "debug")
    for var, text, expected in (
        (
            "SCIMJIT_RUN_WORKER",
            "nah",
            'SCIMJIT_RUN_WORKER: expected one of 1, true, yes, on, 0, false, no, off, got "nah"',
        ),
        ("SCIMJIT_MAX_PAGE_SIZE", "ten", 'SCIMJIT_MAX_PAGE_SIZE: expected an integer, got "ten"'),
        ("SCIMJIT_MAX_PAGE_SIZE", "0", "SCIMJIT_MAX_PAGE_SIZE: expected greater than or equal to 1, got 0"),
        ("SCIMJIT_RATE_LIMIT_BURST", "1.5", 'SCIMJIT_RATE_LIMIT_BURST: expected an integer, got "1.5"'),
        (
            "SCIMJIT_TOKEN_CACHE_SECONDS",
            "inf",
            'SCIMJIT_TOKEN_CACHE_SECONDS: expected a finite number, got "inf"',
        ),
        (
            "SCIMJIT_AUDIT_RETENTION",
            "1e300",
            "SCIMJIT_AUDIT_RETENTION: expected a duration of at most 100 years",
        ),
        ("SCIMJIT_SWEEP_INTERVAL", "-1", "SCIMJIT_SWEEP_INTERVAL: expected a duration that is not negative"),
    ):
        with pytest.raises(ConfigError) as excinfo:
            Settings.load(environ={var: text})
        assert str(excinfo.value) == expected or str(excinfo.value).startswith(expected)


def test_env_wins_over_the_file_and_jit_sweep_interval_over_server(tmp_path):
    text = '[server]\nmax_page_size = 50\nsweep_interval = "9s"\n[jit]\nsweep_interval = "3s"'
    assert load_text(text, tmp_path).max_page_size == 50
    assert load_text(text, tmp_path).sweep_interval == 3
    assert load_text(text, tmp_path, {"SCIMJIT_MAX_PAGE_SIZE": "7"}).max_page_size == 7
    assert load_text(text, tmp_path, {"SCIMJIT_SWEEP_INTERVAL": "1m"}).sweep_interval == 60


# ------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("15m", 900),
        ("8h", 28800),
        ("7d", 604800),
        ("1w", 604800),
        ("500ms", 0.5),
        ("1.5h", 5400),
        (" 2M ", 120),
        ("30", 30),
        (30, 30),
        (2.5, 2.5),
        (0, 0),
        ("0s", 0),
    ],
)
def test_durations(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", [1e300, "1e300", 10**400, "inf", "nan", math.inf, -1, "-5s", "5 parsecs", "", True, None, [1]]
)
def test_bad_durations_are_value_errors_never_overflow(value):
    with pytest.raises(ValueError) as excinfo:
        parse_duration(value)
    assert type(excinfo.value) is ValueError
    assert "expected a duration" in str(excinfo.value)


def test_the_duration_bound_is_one_hundred_years(tmp_path):
    assert parse_duration(MAX_DURATION) == MAX_DURATION
    assert "[jit] expiry_notice: expected a duration of at most 100 years, got 1e+300" in error_of(
        "[jit]\nexpiry_notice = 1e300", tmp_path
    )
    assert "grace_period: expected a duration that is not negative" in error_of(
        APP.replace('name = "wiki"', 'name = "wiki"\ngrace_period = -1'), tmp_path
    )


# ------------------------------------------------------------------ defaults and a full file


def test_defaults_including_the_new_keys():
    s = Settings.load(environ={})
    assert (s.rate_limit_per_second, s.rate_limit_burst) == (1000.0, 2000)
    assert (s.client_rate_limit_per_second, s.client_rate_limit_burst) == (20.0, 200)
    assert s.strict_attributes is False
    assert s.jit.reconcile_interval == 3600.0
    assert (s.database_url, s.max_page_size, s.default_page_size, s.audit_retention) == (
        "sqlite:///./scimjit.db",
        1000,
        100,
        365 * 86400,
    )
    assert (s.run_worker, s.run_sweeper, s.sweep_interval, s.token_cache_seconds) == (True, True, 2.0, 5.0)
    assert s.applications == () and s.jit.policies == ()


FULL = """
[server]
database_url = "postgresql+psycopg://scimjit@db/scimjit"
base_url = "https://scim.example.com"
max_body_bytes = 2048
max_filter_length = 100
max_filter_depth = 5
max_page_size = 50
default_page_size = 20
max_bulk_operations = 10
max_bulk_payload_bytes = 4096
anonymous_discovery = true
token_cache_seconds = 1.5
schemas_dirs = ["/etc/scimjit/schemas"]
run_worker = false
run_sweeper = false
audit_retention = "400d"
rate_limit_per_second = 50
rate_limit_burst = 100
client_rate_limit_per_second = 0
client_rate_limit_burst = 10
strict_attributes = true
metrics_token_required = true
request_log = false
log_level = "warning"
session_secret = "s3"

[jit]
sweep_interval = "5s"
clock_skew = "2m"
jwks_min_refresh = 10
jwks_max_age = "2h"
http_timeout = 3.5
outbox_max_attempts = 3
outbox_backoff_base = "1s"
outbox_backoff_max = "10m"
outbox_lease = "90s"
worker_poll_interval = "500ms"
worker_batch_size = 8
last_login_resolution = "1m"
login_wait = "2s"
sweep_batch_size = 200
expiry_notice = "0s"
notify_applications = ["wiki"]
membership_ttl = { "contractors" = "30d" }
reconcile_interval = 0

[[jit.policies]]
group = " prod-admins "
eligible = "engineers"
max_duration = "8h"
approvers = ["sre-leads"]
approvals_required = 2
auto_approve = { max_duration = "1h", eligible = ["oncall"] }
pending_ttl = "12h"
description = "prod"

[[applications]]
name = "wiki"
issuer = "https://idp.example.com"
audience = "wiki"
match = { claim = "email", attribute = "EMAILS.value" }
groups = ["wiki-users"]
on_first_login = "link"
roles = { "wiki-admins" = "admin", "editors" = ["edit", "review"] }
on_unentitled = "delete"
grace_period = "1d"
algorithms = ["RS256", "ES256"]
clock_skew = "30s"
async_create = true
description = "the wiki"
client_secret_env = "TEST_CONFIG_WIKI_SECRET"
redirect_after_login = "https://wiki.example.com/sso"
scopes = ["openid", "email"]
[applications.connector]
type = "webhook"
url = "https://wiki.example.com/hook"
secret_env = "TEST_CONFIG_HOOK_SECRET"
timeout = 5
headers = { "X-Tenant" = "a" }
"""


def test_a_full_file_loads_to_the_values_it_always_meant(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_CONFIG_WIKI_SECRET", "oidc-secret")
    monkeypatch.setenv("TEST_CONFIG_HOOK_SECRET", "hook-secret")
    s = load_text(FULL, tmp_path)
    server = {name: getattr(s, name) for name in tomllib.loads(FULL)["server"]}
    assert server == {
        **tomllib.loads(FULL)["server"],
        "schemas_dirs": [Path("/etc/scimjit/schemas")],
        "audit_retention": 400 * 86400,
    }
    assert s.sweep_interval == 5
    jit = JitSettings.from_raw(tomllib.loads(FULL))
    assert (jit.clock_skew, jit.jwks_min_refresh, jit.jwks_max_age, jit.http_timeout) == (120, 10, 7200, 3.5)
    assert (jit.outbox_max_attempts, jit.outbox_backoff_base, jit.outbox_backoff_max, jit.outbox_lease) == (
        3,
        1,
        600,
        90,
    )
    assert (jit.worker_poll_interval, jit.worker_batch_size, jit.last_login_resolution, jit.login_wait) == (
        0.5,
        8,
        60,
        2,
    )
    assert s.jit.reconcile_interval == 0

    apps = build_applications(s.applications)
    assert apps == load_applications(tomllib.loads(FULL))
    wiki = apps["wiki"]
    assert (wiki.audience, wiki.match.claim, wiki.match.attribute) == (("wiki",), "email", "emails.value")
    assert (wiki.groups, wiki.on_first_login, wiki.on_unentitled, wiki.grace_period) == (
        ("wiki-users",),
        "link",
        "delete",
        86400,
    )
    assert wiki.roles == {"wiki-admins": ("admin",), "editors": ("edit", "review")}
    assert (wiki.algorithms, wiki.clock_skew, wiki.async_create) == (("RS256", "ES256"), 30, True)
    assert (wiki.client_id, wiki.client_secret, wiki.scopes) == ("wiki", "oidc-secret", ("openid", "email"))
    assert wiki.redirect_after_login == "https://wiki.example.com/sso"
    assert wiki.group_refs == frozenset({"wiki-users", "wiki-admins", "editors"})
    assert wiki.connector.type == "webhook"
    assert wiki.connector.settings == {
        "url": "https://wiki.example.com/hook",
        "secret": "hook-secret",
        "timeout": 5,
        "headers": {"X-Tenant": "a"},
    }
    assert "hook-secret" not in str(wiki.summary()) and "oidc-secret" not in repr(wiki)

    access = AccessSettings.from_config(s.jit, apps)
    assert access == AccessSettings.from_raw(tomllib.loads(FULL), ["wiki"])
    assert (access.sweep_batch_size, access.expiry_notice, access.notify_applications) == (200, 0, ("wiki",))
    assert access.membership_ttl == {"contractors": 30 * 86400}
    (policy,) = access.policies
    assert policy.summary() == {
        "group": "prod-admins",
        "eligible": ["engineers"],
        "maxDuration": 28800,
        "approvers": ["sre-leads"],
        "approvalsRequired": 2,
        "autoApprove": {"maxDuration": 3600, "eligible": ["oncall"]},
        "pendingTTL": 43200,
        "description": "prod",
        "conditions": None,
        "outside": "refuse",
        "windows": [],
    }
    assert access.policy_for("some-id", "PROD-ADMINS") is policy
    assert access.ttl_for("x", "Contractors") == 30 * 86400
    with pytest.raises(ConfigError, match="notify_applications: no application named wiki"):
        AccessSettings.from_config(s.jit, ["other"])


# ------------------------------------------------------------------ the real commands


def _scimjit(*args: str, config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "scimjit"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scimjit.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIMJIT_")}
    env["SCIMJIT_CONFIG"] = str(config)
    env["SCIMJIT_DATABASE_URL"] = f"sqlite:///{cwd / 'never.db'}"
    return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args", [("apps", "list"), ("serve", "--port", "0"), ("users", "list")])
def test_commands_print_one_line_on_a_bad_file(args, tmp_path):
    config = tmp_path / "scimjit.toml"
    config.write_text('[server]\nmax_page_size = "10"\n')
    result = _scimjit(*args, config=config, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr == f'config error: {config}: [server] max_page_size: expected an integer, got "10"\n'
    assert result.stdout == ""
    assert not (tmp_path / "never.db").exists()  # stopped before touching the database


def test_apps_list_reports_an_unknown_application_key_in_one_line(tmp_path):
    config = tmp_path / "scimjit.toml"
    config.write_text(APP.replace('name = "wiki"', 'name = "wiki"\nissuer_url = "x"'))
    result = _scimjit("apps", "list", config=config, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(
        f"config error: {config}: [[applications]] 'wiki' issuer_url: unknown key; known keys: "
    )
    config.write_text(APP)
    result = _scimjit("apps", "list", "--json", config=config, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"name": "wiki"' in result.stdout


def test_secrets_stay_out_of_the_settings_repr(tmp_path):
    text = APP.replace('name = "wiki"', 'name = "wiki"\nclient_secret = "oidc-s3cret"')
    s = load_text(text.replace("[server]", "") + '[server]\nsession_secret = "cookie-s3cret"', tmp_path)
    shown = repr(s)
    assert "wiki" in shown and "secret" in shown  # the key is named, its value is not
    assert "change-me" not in shown and "oidc-s3cret" not in shown and "cookie-s3cret" not in shown


CONSOLE = """
[console]
issuer = "https://login.example.com"
client_id = "scimjit-console"
client_secret = "console-s3cret"
match = { claim = "email", attribute = "EMAILS.value" }
admin_groups = ["iam-admins"]
"""


def test_the_console_table(tmp_path):
    s = load_text(CONSOLE, tmp_path)
    assert s.console is not None and s.console.match.attribute == "emails.value"
    assert s.console.session_lifetime == 8 * 3600 and s.console.page_size == 50
    assert s.console.scopes == ("openid", "profile", "email") and s.console.admin_groups == ("iam-admins",)
    assert "console-s3cret" not in repr(s)
    assert load_text("", tmp_path).console is None  # absent: the console is off


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('issuer = "https://login.example.com"', 'issuer = "http://login.example.com"'), "console.issuer"),
        (('client_id = "scimjit-console"', 'client_id = " "'), "console.client_id"),
        (("admin_groups", 'session_lifetime = "10s"\nadmin_groups'), "session_lifetime must be at least 1m"),
        (("admin_groups", 'scopes = ["profile"]\nadmin_groups'), 'scopes must include "openid"'),
        (("admin_groups", 'algorithms = ["HS256"]\nadmin_groups'), "console.algorithms"),
        (("admin_groups", "colour = 1\nadmin_groups"), "console.colour: unknown key"),
    ],
)
def test_console_mistakes_name_the_key(change, expected, tmp_path):
    message = error_of(CONSOLE.replace(*change), tmp_path)
    assert expected in message, message
