"""The examples of docs/entra.md, docs/okta.md and docs/quickstart.md, run against a real server.

Every ```http block of the IdP guides is sent as written (the documents' example ids mapped to the ids this
server hands out) and must succeed; the behaviour the guides state in prose is asserted next to it. The
quickstart's configuration must pass `scimjit apps list`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from scimjit.cli import main
from scimjit.store.tables import users

DOCS = Path(__file__).resolve().parents[2] / "docs"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

# The example ids the guides use (RFC 7643's own examples): which resource each stands for.
USER_ID = "2819c223-7f76-453a-919d-413861904646"
MANAGER_ID = "26118915-6090-4610-87e4-49d8ca9f808d"
OTHER_ID = "902c246b-6245-4190-8e05-00816be7344a"
GROUP_ID = "e9e30dba-f08f-4109-8486-d5c6a331660a"


def http_blocks(name: str) -> list[tuple[str, str, Any]]:
    """(method, path under /scim/v2, JSON body or None) of each ```http block of docs/<name>."""
    blocks = []
    for text in re.findall(r"```http\n(.*?)```", (DOCS / name).read_text(), re.S):
        head, _, body = text.partition("\n\n")
        method, path = head.splitlines()[0].split(" ", 1)
        assert path.startswith("/scim/v2/"), path
        blocks.append((method, path.removeprefix("/scim/v2"), orjson.loads(body) if body.strip() else None))
    return blocks


def send(server, method: str, path: str, body: Any, ids: dict[str, str]):
    for theirs, ours in ids.items():
        path = path.replace(theirs, ours)
    if body is not None:
        text = orjson.dumps(body).decode()
        for theirs, ours in ids.items():
            text = text.replace(theirs, ours)
        return server.client.request(method, path, json=orjson.loads(text))
    return server.client.request(method, path)


def create(server, kind: str, body: dict[str, Any]) -> str:
    r = server.client.post(f"/{kind}", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def user(server, user_name: str, **attrs: Any) -> str:
    return create(server, "Users", {"schemas": [USER_URN], "userName": user_name, **attrs})


def test_entra_guide_requests(server):
    ids = {
        USER_ID: user(server, "alice@contoso.com", active=True, name={"givenName": "Al", "familyName": "S"}),
        MANAGER_ID: user(server, "boss@contoso.com"),
        OTHER_ID: user(server, "bob@contoso.com"),
    }
    third = user(server, "carol@contoso.com")
    ids[GROUP_ID] = create(
        server,
        "Groups",
        {
            "schemas": [GROUP_URN],
            "displayName": "Sales",
            "members": [{"value": ids[OTHER_ID]}, {"value": third}],
        },
    )
    blocks = http_blocks("entra.md")
    assert [m for m, _, _ in blocks] == ["GET", "PATCH", "PATCH", "PATCH", "PATCH"]

    test_connection = send(server, *blocks[0], ids)  # Test Connection: an empty ListResponse
    assert test_connection.status_code == 200
    assert test_connection.json()["totalResults"] == 0 and test_connection.json()["Resources"] == []

    legacy_user = send(server, *blocks[1], ids)
    assert legacy_user.status_code == 200, legacy_user.text
    doc = legacy_user.json()
    assert doc["active"] is False  # "False", a string
    assert doc["emails"] == [{"type": "work", "value": "alice.smith@contoso.com"}]  # added: there was none
    assert doc[ENTERPRISE]["manager"] == {"value": ids[MANAGER_ID]}  # a bare id

    legacy_group = send(server, *blocks[2], ids)
    assert legacy_group.status_code == 200, legacy_group.text
    assert legacy_group.json()["displayName"] == "Sales EMEA"
    members = {m["value"] for m in server.client.get(f"/Groups/{ids[GROUP_ID]}").json()["members"]}
    assert members == {ids[USER_ID], third}  # `Remove members` with a value list removed only that one

    flag_group = send(server, *blocks[3], ids)
    assert flag_group.status_code == 200, flag_group.text
    assert [m["value"] for m in server.client.get(f"/Groups/{ids[GROUP_ID]}").json()["members"]] == [third]

    flag_user = send(server, *blocks[4], ids)
    assert flag_user.status_code == 200, flag_user.text
    doc = flag_user.json()
    assert doc["displayName"] == "Alice Smith" and doc["name"]["givenName"] == "Alice"
    assert doc[ENTERPRISE]["employeeNumber"] == "701984" and doc["active"] is False


def test_entra_guide_statements(server):
    manager = user(server, "boss@contoso.com")
    r = server.client.post(
        "/Users",
        json={
            "schemas": [USER_URN, ENTERPRISE],
            "userName": "Alice@Contoso.com",
            "active": "True",
            "roles": [],
            "meta": {"resourceType": "User"},
            ENTERPRISE: {"department": "Ops", "manager": manager},
        },
    )
    assert r.status_code == 201 and r.json()["active"] is True
    assert r.json()[ENTERPRISE]["manager"] == {"value": manager}
    alice = r.json()["id"]
    dup = server.client.post("/Users", json={"schemas": [USER_URN], "userName": "alice@contoso.com"})
    assert dup.status_code == 409 and dup.json()["scimType"] == "uniqueness"

    # An unknown attribute is ignored, and does not block the deactivation beside it.
    r = server.client.patch(
        f"/Users/{alice}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "Replace", "path": "urn:example:custom:2.0:User:costCode", "value": "x"},
                {"op": "Replace", "path": "active", "value": "False"},
            ],
        },
    )
    assert r.status_code == 200 and r.json()["active"] is False
    # ...but a filter on one is refused.
    r = server.client.get("/Users", params={"filter": 'mail eq "alice@contoso.com"'})
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"

    group = create(
        server, "Groups", {"schemas": [GROUP_URN], "displayName": "Sales", "members": [{"value": alice}]}
    )
    found = server.client.get(
        "/Groups", params={"filter": 'displayName eq "sales"', "excludedAttributes": "members"}
    )
    assert [g["id"] for g in found.json()["Resources"]] == [group] and "members" not in found.json()[
        "Resources"
    ][0]
    # Retries are harmless: re-adding a member, removing a non-member.
    for op in (
        {"op": "Add", "path": "members", "value": [{"value": alice}]},
        {"op": "Remove", "path": "members", "value": [{"value": manager}]},
    ):
        r = server.client.patch(f"/Groups/{group}", json={"schemas": [PATCH_OP], "Operations": [op]})
        assert r.status_code == 200 and [m["value"] for m in r.json()["members"]] == [alice]
    # Only `value eq` member filters.
    r = server.client.patch(
        f"/Groups/{group}",
        json={"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": 'members[display co "a"]'}]},
    )
    assert r.status_code == 400 and r.json()["scimType"] == "invalidFilter"
    # `remove` on members without a value empties the group.
    r = server.client.patch(
        f"/Groups/{group}", json={"schemas": [PATCH_OP], "Operations": [{"op": "remove", "path": "members"}]}
    )
    assert r.status_code == 200 and "members" not in r.json()

    # The Tenant URL's feature flag reaches scimjit as a query parameter, and is ignored.
    r = server.client.get("/Users?aadOptscim062020", params={"filter": 'userName eq "nobody"'})
    assert r.status_code == 200 and r.json()["totalResults"] == 0

    reader = server.token("reader", "scim:read")
    r = server.client.post(
        "/Users",
        json={"schemas": [USER_URN], "userName": "x"},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert r.status_code == 403


def test_okta_guide_requests(server):
    ids = {OTHER_ID: user(server, "other@okta.local")}
    ids[GROUP_ID] = create(
        server,
        "Groups",
        {"schemas": [GROUP_URN], "displayName": "Test SCIMv2", "members": [{"value": ids[OTHER_ID]}]},
    )
    blocks = http_blocks("okta.md")
    assert [(m, p.split("/")[1].split("?")[0]) for m, p, _ in blocks] == [
        ("GET", "Users"),
        ("POST", "Users"),
        ("PUT", "Users"),
        ("PATCH", "Groups"),
        ("PATCH", "Groups"),
        ("PATCH", "Users"),
    ]
    okta = {"User-Agent": "Okta SCIM Client 1.0.0"}
    server.client.headers.update(okta)

    exists = send(server, *blocks[0], ids)
    assert exists.status_code == 200 and exists.json()["totalResults"] == 0

    created = send(server, *blocks[1], ids)
    assert created.status_code == 201, created.text
    assert "password" not in created.json() and "groups" not in created.json()
    assert created.json()["externalId"] == "00ujl29u0le5T6Aj10h7"
    ids[USER_ID] = created.json()["id"]
    assert send(server, *blocks[1], ids).status_code == 409  # the same create again
    assert send(server, *blocks[0], ids).json()["totalResults"] == 1

    put = send(server, *blocks[2], ids)
    assert put.status_code == 200, put.text
    after = server.client.get(f"/Users/{ids[USER_ID]}").json()
    assert after["name"]["middleName"] == "Excited"
    for gone in ("externalId", "displayName", "locale"):  # a PUT replaces: what Okta leaves out is removed
        assert gone not in after
    with server.services.db.read() as conn:  # ...except the password, which a PUT without one keeps
        hashed = conn.execute(sa.select(users.c.password_hash).where(users.c.id == ids[USER_ID])).scalar()
    assert hashed and hashed.startswith("scrypt$")

    version = server.client.get(f"/Groups/{ids[GROUP_ID]}").headers["ETag"]
    rename = send(server, *blocks[3], ids)
    assert rename.status_code == 200, rename.text
    assert rename.headers["ETag"] == version  # renamed to the same name: nothing changed

    members = send(server, *blocks[4], ids)
    assert members.status_code == 200, members.text
    assert [m["value"] for m in members.json()["members"]] == [ids[USER_ID]]

    deactivate = send(server, *blocks[5], ids)
    assert deactivate.status_code == 200 and deactivate.json()["active"] is False


def test_okta_guide_statements(server):
    r = server.client.get("/Users", params={"startIndex": 1, "count": 2})  # Test Connector Configuration
    assert r.status_code == 200 and r.json()["startIndex"] == 1
    alice = user(server, "Test.User@okta.local", active=True)
    found = server.client.get("/Users", params={"filter": 'userName eq "test.user@okta.local"', "count": 100})
    assert [u["id"] for u in found.json()["Resources"]] == [alice]  # case-insensitive
    group = create(server, "Groups", {"schemas": [GROUP_URN], "displayName": "Test SCIMv2", "members": []})
    r = server.client.patch(
        f"/Groups/{group}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [
                {"op": "replace", "value": {"id": group, "displayName": "Renamed"}},
                {"op": "add", "path": "members", "value": [{"value": alice}]},
            ],
        },
    )
    assert r.status_code == 200 and r.json()["displayName"] == "Renamed"
    r = server.client.patch(
        f"/Groups/{group}",
        json={
            "schemas": [PATCH_OP],
            "Operations": [{"op": "replace", "value": {"id": "another", "displayName": "X"}}],
        },
    )
    assert r.status_code == 400 and r.json()["scimType"] == "mutability"
    r = server.client.patch(
        f"/Users/{alice}",
        json={"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": True}}]},
    )
    assert r.status_code == 200 and r.json()["active"] is True
    bad = server.client.get("/Users", headers={"Authorization": "Bearer sjt_nope"})
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")
    assert bad.json()["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]


def test_quickstart_configuration_is_valid(tmp_path, monkeypatch, capsys):
    toml = re.search(r"```toml\n(.*?)```", (DOCS / "quickstart.md").read_text(), re.S)
    assert toml is not None
    config = tmp_path / "scimjit.toml"
    config.write_text(toml.group(1))
    monkeypatch.setenv("SCIMJIT_CONFIG", str(config))
    assert main(["apps", "list", "--json"]) == 0
    (app,) = orjson.loads(capsys.readouterr().out)
    assert app["name"] == "wiki" and app["connector"]["type"] == "webhook"


@pytest.mark.parametrize("name", ["entra.md", "okta.md", "quickstart.md"])
def test_guides_link_to_existing_documents(name):
    text = (DOCS / name).read_text()
    for target in re.findall(r"\]\(([a-z-]+\.md)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"{name} links to missing {target}"


def saml_section() -> str:
    text = (DOCS / "jit-provisioning.md").read_text()
    return text.split("\n## SAML sign-ins\n", 1)[1].split("\n## ", 1)[0]


def test_saml_worked_example(db, clock, tmp_path, monkeypatch, capsys):
    """docs/jit-provisioning.md, "SAML sign-ins": its configuration loads, `scimjit apps list` prints what the
    page shows, and the ACS handler of the page, run as written against a real server, creates the account
    once, finds it next time and has the replay refused as the page says."""
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.services import Services
    from tests.jit_helpers import WebhookReceiver, add_group, add_user
    from tests.live_server import serve
    from tests.saml_helpers import LocalSamlIdp, encode

    section = saml_section()
    (toml_text,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    (console,) = re.findall(r"```console\n(.*?)```", section, re.S)
    (handler,) = re.findall(r"```python\n(.*?)```", section, re.S)
    idp = LocalSamlIdp()
    metadata = tmp_path / "idp-metadata.xml"
    metadata.write_bytes(idp.metadata())
    monkeypatch.setenv("WIKI_WEBHOOK_SECRET", "change-me")

    with WebhookReceiver().running() as hook:
        config_text = toml_text.replace("/etc/scimjit/idp-metadata.xml", str(metadata)).replace(
            "https://wiki.internal/scimjit/events", hook.url
        )
        config = tmp_path / "scimjit.toml"
        config.write_text(config_text)
        monkeypatch.setenv("SCIMJIT_CONFIG", str(config))
        assert main(["apps", "list"]) == 0
        command, *shown = console.strip().splitlines()
        assert command == "$ scimjit apps list"
        assert capsys.readouterr().out.strip().splitlines() == shown

        raw = tomllib.loads(config_text)
        settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
        services = Services.build(settings, db=db, clock=clock)
        alice = add_user(db, "alice")
        add_group(db, "wiki-users", [alice])
        add_group(db, "wiki-admins", [alice])

        class RetryLater(Exception):
            pass

        class Forbidden(Exception):
            pass

        page: dict[str, Any] = {"RetryLater": RetryLater, "Forbidden": Forbidden}
        exec(compile(handler, "jit-provisioning.md", "exec"), page)
        page["SCIMJIT_LOGIN_TOKEN"] = services.tokens.create("wiki-login", ["login"], application="wiki")
        with serve(create_app(services=services)) as url:
            page["SCIMJIT_URL"] = url
            ensure_account = page["ensure_account"]
            first = encode(idp.response(clock.now(), in_response_to="_req-1"))
            answer = ensure_account({"SAMLResponse": first, "RelayState": "/"}, "_req-1")
            assert answer["account"]["status"] == "created" and answer["roles"] == ["admin"]
            assert [e["user"]["userName"] for e in hook.of_type("account.create")] == ["alice"]
            later = encode(idp.response(clock.now(), in_response_to="_req-2"))
            assert ensure_account({"SAMLResponse": later}, "_req-2")["account"]["status"] == "existing"
            with pytest.raises(Forbidden) as excinfo:
                ensure_account({"SAMLResponse": first}, "_req-1")
            error, detail = excinfo.value.args
            assert error == "invalid_saml_response" and detail.startswith("replayed: assertion '_a")
            assert len(hook.of_type("account.create")) == 1


# ---------------------------------------------------------------- docs/jit-access.md: schedules, idle accounts


def fenced(name: str, info: str) -> list[str]:
    """The bodies of the ```<info> blocks of docs/<name>, in order."""
    return re.findall(rf"```{re.escape(info)}\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_jit_access_schedule_examples(db, clock):
    """The PUT of "Shifts from a schedule" sent as written answers the summary shown; sent again it changes
    nothing; the CSV plan shown, imported through the CLI's reader, is the same plan (all unchanged)."""
    import httpx

    from scimjit.cli.schedules import read_plan
    from scimjit.config import Settings
    from scimjit.http.app import create_app
    from scimjit.services import compose
    from tests.access_helpers import Directory, config
    from tests.live_server import serve

    request, csv_plan = (
        fenced("jit-access.md", "json schedule-plan")[0],
        fenced("jit-access.md", "csv schedule-plan")[0],
    )
    (answer,) = fenced("jit-access.md", "json schedule-summary")
    head, _, body = request.partition("\n")
    method, path = head.split()[:2]
    status, _, summary = answer.partition(" ")
    settings = Settings.load(
        environ={}, database_url=db.url, token_cache_seconds=0, document=config(), run_sweeper=False,
        run_worker=False,
    )  # fmt: skip
    services = compose(settings, db=db, clock=clock)
    directory = Directory(db, clock, services.access)
    directory.user("alice"), directory.user("bob")
    directory.group("dock-supervisors")
    token = {"Authorization": f"Bearer {services.tokens.create('rota', ['schedules'])}"}
    with serve(create_app(services=services)) as url:
        r = httpx.request(method, f"{url}{path}", content=body, headers=token, timeout=30)
        assert r.status_code == int(status), r.text
        assert r.json() == orjson.loads(summary)
        again = httpx.request(method, f"{url}{path}", content=body, headers=token, timeout=30).json()
        assert again == {"created": 0, "updated": 0, "revoked": 0, "unchanged": 2, "skipped": 0}
    source = path.rsplit("/", 1)[1]
    from_csv = services.access.apply_schedule(source, read_plan(csv_plan, "rota.csv"), actor="docs")
    assert from_csv == {"created": 0, "updated": 0, "revoked": 0, "unchanged": 2, "skipped": 0}


def test_jit_access_idle_example(db, clock):
    """The `idle_after` / `on_idle` of "Idle accounts" on the test application: last used 31 days ago is
    disabled at the next sweep, 29 days ago two days later; the other application is untouched."""
    import tomllib

    from scimjit.clock import to_micros
    from scimjit.store.tables import accounts
    from tests.access_helpers import Directory, account, config, give_account, make_access

    (example,) = fenced("jit-access.md", "toml idle-example")
    table = tomllib.loads(example)["applications"][0]
    raw = config()
    raw["applications"][0].update(idle_after=table["idle_after"], on_idle=table["on_idle"])
    access = make_access(db, clock, raw)
    directory = Directory(db, clock, access)
    day = 86_400_000_000
    now = to_micros(clock.now())
    ids = {}
    for name, days in (("alice", 31), ("bob", 29)):
        ids[name] = user_id = directory.user(name)
        give_account(db, "wiki", user_id)
        give_account(db, "chat", user_id)
        with db.write() as conn:
            conn.execute(
                accounts.update().where(accounts.c.user_id == user_id).values(last_login_at=now - days * day)
            )

    def status(app: str, name: str) -> str:
        return str(account(db, app, ids[name]).status)

    assert access.sweeper.sweep_once().idle_reclaimed == 1
    assert (status("wiki", "alice"), status("wiki", "bob")) == ("disabled", "active")
    clock.advance(2 * 86_400)
    assert access.sweeper.sweep_once().idle_reclaimed == 1
    assert (status("wiki", "bob"), status("chat", "alice"), status("chat", "bob")) == (
        "disabled",
        "active",
        "active",
    )
