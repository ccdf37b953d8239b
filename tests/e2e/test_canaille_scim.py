"""A real IdP that pushes SCIM: Canaille (via pytest-iam, with its SCIM client on: `[CANAILLE_SCIM]
ENABLE_CLIENT`, see tests/conftest.py) provisions users and a group to a running `scimjit serve` by its own
means, authenticating with an opaque access token it minted, which scimjit checks by RFC 7662 introspection
at Canaille (`[[authorization_servers]]`). Then a user signs in through Canaille's OIDC to a JIT application
of scimjit (the code flow), which creates the downstream account, and deleting the user in Canaille removes
it again.

Canaille pushes synchronously (its task broker is the eager one in tests): when `backend.save()` returns,
the SCIM requests have been answered, so each step is asserted right after it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from scimjit.config import Settings
from scimjit.services import Services
from tests.cli_server import Served, cli_env, serve
from tests.jit_helpers import WebhookReceiver
from tests.live_server import free_port

SCIMJIT = [str(Path(sys.executable).with_name("scimjit"))]
DONE = "http://127.0.0.1:9/done"


def toml_value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


def toml_table(name: str, table: dict[str, Any]) -> str:
    return f"[[{name}]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())


class Chain:
    """Canaille, the scimjit process, its webhook downstream and what the test needs to look at them."""

    def __init__(
        self, iam: Any, served: Served, db: Any, env: dict[str, str], hook: WebhookReceiver, **names: Any
    ) -> None:
        self.iam, self.served, self.db, self.env, self.hook = iam, served, db, env, hook
        self.name: str = names["name"]  # the JIT application, and its Canaille client id
        self.prov: str = names["prov"]  # the Canaille client that pushes SCIM
        self.client: Any = names["client"]  # the Canaille client users sign in with
        self.url = served.url
        admin = Services.build(Settings.load(environ={}, database_url=db.url), db=db)
        self.headers = {"Authorization": f"Bearer {admin.tokens.create('test-admin', ['admin'])}"}

    def scim(self, path: str, **params: str) -> Any:
        r = httpx.get(f"{self.url}/scim/v2{path}", params=params, headers=self.headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def user_by_external_id(self, external_id: str) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = self.scim("/Users", filter=f'externalId eq "{external_id}"').get(
            "Resources", []
        )
        return resources

    def group_by_external_id(self, external_id: str) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = self.scim("/Groups", filter=f'externalId eq "{external_id}"').get(
            "Resources", []
        )
        return resources

    def deliver(self) -> None:
        """Deliver what the outbox holds now (`scimjit worker --once`: no waiting on a background loop)."""
        done = subprocess.run(
            [*SCIMJIT, "worker", "--once"],
            env=self.env,
            cwd=self.served.stdout.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr

    def sign_in(self, user: Any) -> httpx.URL:
        """The browser's part of the code flow run by scimjit, with the user logged in at Canaille."""
        r = httpx.get(f"{self.url}/jit/v1/apps/{self.name}/login")
        assert r.status_code == 302, r.text
        cookies = r.cookies
        self.iam.login(user)
        self.iam.consent(user, self.client)
        try:
            r = httpx.get(r.headers["location"])
        finally:
            self.iam.logout()
        assert r.status_code == 302, r.text
        r = httpx.get(r.headers["location"], cookies=cookies)
        assert r.status_code == 302, r.text
        return httpx.URL(r.headers["location"])


def canaille_client(iam: Any, client_id: str, **fields: Any) -> Any:
    client = iam.models.Client(
        client_id=client_id,
        client_secret="s3cret",
        client_name=client_id,
        grant_types=["authorization_code"],
        response_types=["code"],
        scope=["openid", "profile", "email"],
        token_endpoint_auth_method="client_secret_basic",
        **fields,
    )
    iam.backend.save(client)
    client.audience = [client]
    iam.backend.save(client)
    return client


def forget(iam: Any, client: Any) -> None:
    """A client must not outlive its scimjit: Canaille would push every later user to a dead URL."""
    for token in iam.backend.query(iam.models.Token, client=client):
        iam.backend.delete(token)
    for consent in iam.backend.query(iam.models.Consent, client=client):
        iam.backend.delete(consent)
    iam.backend.delete(client)


@pytest.fixture
def chain(db, iam_server, tmp_path) -> Iterator[Chain]:
    """Two Canaille clients, as an IdP has a provisioning connection and a sign-in app: `prov…` pushes SCIM
    (its `client_uri` is scimjit's SCIM base URL) and is the client scimjit introspects Canaille's tokens
    with; `wiki…` is the JIT application users sign in to. (One client for both does not work with Canaille
    0.3.6: once a user has signed in, its SCIM client reuses that user's access token, a JWT with
    `typ: JWT` and no `client_id`, which scimjit rightly refuses; see the report of issue 14.)"""
    assert iam_server.app.features.has_scim_client, "Canaille's SCIM client is off (tests/conftest.py)"
    suffix = uuid.uuid4().hex[:6]
    name, prov = f"wiki{suffix}", f"prov{suffix}"
    issuer = iam_server.url.rstrip("/")
    port = free_port()  # known before the start: the sign-in's redirect_uri comes from base_url only
    with WebhookReceiver().running() as hook:
        config = tmp_path / "scimjit.toml"
        config.write_text(
            f'[server]\nsession_secret = "test-secret"\nbase_url = "http://127.0.0.1:{port}"\n\n'
            + toml_table(
                "authorization_servers",
                {
                    "issuer": issuer,
                    "audience": prov,  # Canaille's token is for its client: aud = [client_id]
                    "client_id": prov,  # Canaille lets a client introspect only tokens it is audience of
                    "client_secret": "s3cret",
                    "introspection_cache": "60s",
                    "clients": {prov: ["scim:write", "scim:read"]},
                },
            )
            + "\n"
            + toml_table(
                "applications",
                {
                    "name": name,
                    "issuer": issuer,
                    "audience": [name],
                    "client_secret": "s3cret",
                    "match": {"claim": "email", "attribute": "emails.value"},
                    "require_email_verified": False,  # Canaille sends no email_verified claim
                    "groups": [f"{name}-users"],
                    "on_first_login": "create",
                    "on_unentitled": "delete",
                    "redirect_after_login": DONE,
                    "connector": {"type": "webhook", "url": hook.url, "secret": "change-me"},
                },
            )
        )
        tomllib.loads(config.read_text())  # the test's own TOML writer made valid TOML
        env = cli_env(
            db.test_url,
            SCIMJIT_CONFIG=str(config),
            SCIMJIT_RUN_WORKER="false",  # the test delivers with `scimjit worker --once`
            SCIMJIT_RUN_SWEEPER="false",
        )
        with serve(SCIMJIT, env, tmp_path, port=port) as served:
            pusher = canaille_client(
                iam_server, prov, client_uri=f"{served.url}/scim/v2", redirect_uris=[DONE]
            )
            with iam_server.app.app_context():  # trusted: 127.0.0.1 is in TRUSTED_DOMAINS (tests/conftest.py)
                assert pusher.trusted
            wiki = canaille_client(
                iam_server, name, redirect_uris=[f"{served.url}/jit/v1/apps/{name}/callback"]
            )
            chain = Chain(iam_server, served, db, env, hook, name=name, prov=prov, client=wiki)
            try:
                yield chain
            finally:
                forget(iam_server, pusher)
                forget(iam_server, wiki)


def test_canaille_provisions_scimjit_and_a_login_makes_then_removes_the_account(chain, iam_server):
    iam, name = chain.iam, chain.name
    hook = chain.hook
    user_name = f"alice{uuid.uuid4().hex[:6]}"
    email = f"{user_name}@example.com"

    # 1. Canaille creates a user: POST /Users (after its discovery and an externalId lookup)
    user = iam.random_user(user_name=user_name, emails=[email], family_name="Liddell", given_name="Alice")
    [pushed] = chain.user_by_external_id(user.id)
    assert pushed["userName"] == user_name
    assert pushed["name"]["familyName"] == "Liddell" and pushed["name"]["givenName"] == "Alice"
    assert email in [e["value"] for e in pushed["emails"]]
    assert pushed["active"] is True

    # 2. Canaille edits the user: PUT /Users/{id}; the edit is reflected, the id kept
    with iam.app.app_context():
        iam.backend.update(user, family_name="Pleasance")
        iam.backend.save(user)
    [edited] = chain.user_by_external_id(user.id)
    assert edited["id"] == pushed["id"] and edited["name"]["familyName"] == "Pleasance"

    # 3. Canaille creates a group with the user: POST /Groups with the member's scimjit id
    group = iam.random_group(display_name=f"{name}-users", members=[user])
    [pushed_group] = chain.group_by_external_id(group.id)
    assert pushed_group["displayName"] == f"{name}-users"
    assert [m["value"] for m in pushed_group.get("members", [])] == [pushed["id"]]

    # 4. the user signs in through Canaille to the JIT application: the account is created downstream
    done = chain.sign_in(user)
    assert str(done.copy_with(query=None)) == DONE
    assert set(done.params) == {"result"}  # the signed result, verified with scimjit's published keys
    keys = KeySet.import_key_set(httpx.get(f"{chain.url}/jit/v1/jwks.json").json())
    result = jwt.decode(done.params["result"], keys, algorithms=["ES256"]).claims
    assert (result["sub"], result["status"], result["aud"]) == (pushed["id"], "created", name)
    chain.deliver()
    created = [e for e in hook.events if e["user"]["userName"] == user_name]
    assert [e["type"] for e in created] == ["account.create"], hook.events

    # 5. Canaille deletes the user: DELETE /Users/{id}; scimjit removes the downstream account
    with iam.app.app_context():
        iam.backend.delete(user)
    assert chain.user_by_external_id(user.id) == []
    r = httpx.get(f"{chain.url}/scim/v2/Users/{pushed['id']}", headers=chain.headers)
    assert r.status_code == 404
    chain.deliver()
    removed = [e["type"] for e in hook.events if e["user"]["userName"] == user_name]
    assert removed == ["account.create", "account.delete"], hook.events
    [left] = chain.group_by_external_id(group.id)  # Canaille pushed the group again without the user
    assert left["id"] == pushed_group["id"] and left.get("members", []) == []

    # every push was made with Canaille's own opaque token, introspected: the access log names its principal
    _, err = chain.served.output()
    assert "Traceback" not in err
    log = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    pushes = [e for e in log if e.get("path", "").startswith("/scim/v2/") and e.get("token") != "test-admin"]
    methods = {e["method"] for e in pushes}
    assert {"GET", "POST", "PUT", "DELETE"} <= methods, methods
    host = httpx.URL(iam.url).netloc.decode()
    assert {e["token"] for e in pushes} == {f"oauth:{host}:{chain.prov}"}
    assert all(e["status"] < 300 for e in pushes), [e for e in pushes if e["status"] >= 300]


def test_canaille_token_without_a_mapping_is_refused(chain, iam_server):
    """Canaille's token for another client (not mapped, and not introspectable by scimjit's client) is
    refused: nothing is provisioned from it."""
    other = iam_server.models.Client(
        client_id=f"other{uuid.uuid4().hex[:6]}",
        client_secret="s3cret",
        client_name="other",
        redirect_uris=["http://localhost:5555/callback"],
        grant_types=["authorization_code"],
        response_types=["code"],
        scope=["openid"],
        token_endpoint_auth_method="client_secret_basic",
    )
    iam_server.backend.save(other)
    try:
        from canaille.scim.client import get_or_create_token

        with iam_server.app.app_context():
            token = get_or_create_token(other).access_token
        r = httpx.get(f"{chain.url}/scim/v2/Users", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    finally:
        for token in iam_server.backend.query(iam_server.models.Token, client=other):
            iam_server.backend.delete(token)
        iam_server.backend.delete(other)
