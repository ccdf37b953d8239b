"""The application registry: the issue's minimal file works as written; mistakes fail with clear messages."""

from __future__ import annotations

import tomllib

import pytest

from scimjit.config import ConfigError, JitSettings
from scimjit.delivery import connectors
from scimjit.entitlement.apps import ASYMMETRIC_ALGORITHMS, load_applications

MINIMAL = """
[[applications]]
name = "wiki"
issuer = "http://127.0.0.1:9000"
audience = ["wiki"]
match = { claim = "preferred_username", attribute = "userName" }
groups = ["wiki-users"]
on_first_login = "create"
roles = { "wiki-admins" = "admin" }
on_unentitled = "disable"                  # or "delete" / "keep"
grace_period = "0s"

[applications.connector]
type = "webhook"
url = "http://127.0.0.1:9100/events"
secret = "change-me"
"""


def load(text: str) -> dict:
    return load_applications(tomllib.loads(text))


def test_the_minimal_file_of_the_issue_works_as_written():
    apps = load(MINIMAL)
    wiki = apps["wiki"]
    assert wiki.issuer == "http://127.0.0.1:9000"
    assert wiki.audience == ("wiki",)
    assert (wiki.match.claim, wiki.match.attribute) == ("preferred_username", "userName")
    assert wiki.groups == ("wiki-users",)
    assert wiki.on_first_login == "create"
    assert wiki.roles == {"wiki-admins": ("admin",)}
    assert wiki.on_unentitled == "disable"
    assert wiki.grace_period == 0.0
    assert wiki.connector.type == "webhook"
    assert wiki.algorithms == ASYMMETRIC_ALGORITHMS
    connector = connectors.build(wiki)
    assert "change-me" not in repr(connector)
    summary = wiki.summary()
    assert summary["connector"]["secret"] == "***"


def test_entitlement_and_roles_match_ids_and_names_case_insensitively():
    wiki = load(MINIMAL)["wiki"]
    assert wiki.entitled({"wiki-users"})
    assert not wiki.entitled({"other"})
    assert wiki.roles_for({"wiki-admins", "wiki-users"}) == ["admin"]
    everyone = load(MINIMAL.replace('groups = ["wiki-users"]', "groups = []"))["wiki"]
    assert everyone.entitled(set())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('on_first_login = "create"', 'on_first_login = "maybe"'), "on_first_login"),
        (("on_first_logn = 1", ""), None),
        (('issuer = "http://127.0.0.1:9000"', 'issuer = "http://idp.example.com"'), "https"),
        (('audience = ["wiki"]', "audience = []"), "audience"),
        (('attribute = "userName"', 'attribute = "nickName"'), "match.attribute"),
        (('on_unentitled = "disable"', 'on_unentitled = "purge"'), "on_unentitled"),
        (('grace_period = "0s"', 'grace_period = "soon"'), "grace_period"),
        (('type = "webhook"', 'type = "nope"'), "unknown connector type"),
        (('secret = "change-me"', ""), "secret"),
        (('url = "http://127.0.0.1:9100/events"', 'url = "http://hooks.example.com/x"'), "https"),
    ],
)
def test_mistakes_are_reported_with_the_application_and_key(change, message):
    old, new = change
    if message is None:  # an unknown key
        text = MINIMAL.replace("grace_period", "grace_perod")
        message = "grace_perod: unknown key"
    else:
        text = MINIMAL.replace(old, new)
    with pytest.raises(ConfigError) as excinfo:
        for app in load(text).values():
            connectors.build(app)
    assert message in str(excinfo.value)
    assert "wiki" in str(excinfo.value)


def test_hmac_and_none_algorithms_are_refused():
    for alg in ("HS256", "none"):
        text = MINIMAL.replace('grace_period = "0s"', f'grace_period = "0s"\nalgorithms = ["RS256", "{alg}"]')
        with pytest.raises(ConfigError, match="never HMAC"):
            load(text)


def test_duplicate_names_and_https_issuers():
    with pytest.raises(ConfigError, match="used twice"):
        load(MINIMAL + MINIMAL.replace("[applications.connector]", "[applications.connector]"))
    https = load(MINIMAL.replace("http://127.0.0.1:9000", "https://login.example.com/tenant"))
    assert https["wiki"].issuer == "https://login.example.com/tenant"
    for loopback in ("http://localhost:9000", "http://[::1]:9000"):
        assert load(MINIMAL.replace("http://127.0.0.1:9000", loopback))["wiki"].issuer == loopback


def test_secrets_can_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WIKI_HOOK_SECRET", "from-env")
    app = load(MINIMAL.replace('secret = "change-me"', 'secret_env = "WIKI_HOOK_SECRET"'))["wiki"]
    assert app.connector.settings["secret"] == "from-env"
    with pytest.raises(ConfigError, match="not set"):
        load(MINIMAL.replace('secret = "change-me"', 'secret_env = "NOT_SET_ANYWHERE"'))


def test_jit_settings_parse_durations_and_ignore_other_keys():
    settings = JitSettings.from_raw(
        {"jit": {"clock_skew": "2m", "outbox_max_attempts": 3, "sweep_interval": "1s"}}
    )
    assert settings.clock_skew == 120
    assert settings.outbox_max_attempts == 3
    with pytest.raises(ConfigError, match="outbox_lease"):
        JitSettings.from_raw({"jit": {"outbox_lease": "forever"}})
