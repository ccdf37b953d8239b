"""`POST /jit/v1/logins` with a SAML Response over a real socket: the two body shapes, the JSON refusals
(`invalid_saml_response` naming the check, never a traceback), the charge of a refused response to the
client's bucket, and the application's SAML IdP in the admin view `/jit/v1/apps`."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import Services
from tests.jit_helpers import WebhookReceiver, add_group, add_user
from tests.live_server import serve
from tests.saml_helpers import LocalSamlIdp, encode, saml_config

CRM = """
[[applications]]
name = "crm"
issuer = "http://127.0.0.1:9"
audience = ["crm"]
match = { claim = "preferred_username", attribute = "userName" }
[applications.connector]
type = "webhook"
url = "http://127.0.0.1:9/events"
secret = "s"
"""


@pytest.fixture(scope="module")
def idp() -> LocalSamlIdp:
    return LocalSamlIdp()


@pytest.fixture
def site(db, clock, idp, tmp_path: Path) -> Iterator[dict[str, Any]]:
    metadata = tmp_path / "idp.xml"
    metadata.write_bytes(idp.metadata())
    with WebhookReceiver().running() as hook:
        raw = tomllib.loads(saml_config(str(metadata), hook.url).replace("[jit]", CRM + "\n[jit]"))
        settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
        services = Services.build(settings, db=db, clock=clock)
        alice = add_user(db, "alice")
        add_group(db, "wiki-users", [alice])
        admin = services.tokens.create("admin", ["admin"])
        token = services.tokens.create("wiki-login", ["login"], application="wiki")
        with serve(create_app(services=services)) as url:
            yield {
                "url": url,
                "hook": hook,
                "admin": {"Authorization": f"Bearer {admin}"},
                "login": {"Authorization": f"Bearer {token}"},
            }


def post(site: dict[str, Any], body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{site['url']}/jit/v1/logins", json=body, headers=headers or site["login"], timeout=30)


def test_saml_login_over_http(site, idp, clock):
    response = encode(idp.response(clock.now()))
    r = post(site, {"application": "wiki", "saml_response": response, "in_response_to": "req-1"})
    assert r.status_code == 200, r.text
    assert r.json()["account"]["status"] == "created" and r.json()["user"]["userName"] == "alice"
    assert [e["user"]["userName"] for e in site["hook"].of_type("account.create")] == ["alice"]
    again = post(site, {"application": "wiki", "saml_response": response, "in_response_to": "req-1"})
    assert again.status_code == 401 and set(again.json()) == {"error", "detail"}
    assert again.json()["error"] == "invalid_saml_response" and again.json()["detail"].startswith("replayed:")


def test_body_shapes(site, idp, clock):
    saml = encode(idp.response(clock.now()))
    cases = [
        {"application": "wiki"},  # no credential
        {"application": "wiki", "saml_response": saml, "id_token": "a.b.c"},  # both
        {"application": "wiki", "saml_response": 7},
        {"application": "wiki", "saml_response": saml, "in_response_to": 7},
        {"application": "crm", "id_token": "a.b.c", "in_response_to": "req-1"},  # in_response_to is SAML's
    ]
    for body in cases:
        r = post(site, body, site["admin"])
        assert (r.status_code, r.json()["error"]) == (400, "invalid_request"), body
    r = post(site, {"application": "crm", "saml_response": saml}, site["admin"])
    assert (r.status_code, r.json()["error"]) == (400, "saml_not_configured")
    r = post(site, {"application": "wiki", "id_token": "a.b.c"})
    assert (r.status_code, r.json()["error"]) == (400, "oidc_not_configured")
    r = post(site, {"application": "wiki", "saml_response": "x" * 200_000})
    assert (r.status_code, r.json()["error"]) == (413, "too_large")
    r = post(site, {"application": "wiki", "saml_response": encode(b"<a><b></a>")})
    assert r.status_code == 401 and r.json()["detail"].startswith("xml:")
    assert "Traceback" not in r.text


def test_admin_view_shows_the_saml_idp(site, idp):
    apps = httpx.get(f"{site['url']}/jit/v1/apps", headers=site["admin"], timeout=30).json()["applications"]
    wiki = next(a for a in apps if a["name"] == "wiki")
    assert wiki["issuer"] == "" and wiki["saml"]["idpEntityId"] == idp.entity_id
    assert wiki["saml"]["acsUrl"] == "https://wiki.example.com/saml/acs"
    assert "BEGIN CERTIFICATE" not in str(wiki)
