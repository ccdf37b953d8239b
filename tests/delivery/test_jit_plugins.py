"""Third-party connectors: the complete example of docs/connectors.md, installed as a real distribution with a
`scimjit.connectors` entry point, is found, validated and works against an HTTP server."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from scimjit.clock import FrozenClock
from scimjit.config import ConfigError
from scimjit.delivery import connectors
from scimjit.delivery.connectors.base import Call, Outcome, TransientError
from scimjit.delivery.outbox import new_event
from scimjit.entitlement.apps import load_applications

DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


def documented_plugin() -> str:
    blocks = re.findall(r"```python\n(# scimjit_acmecrm\.py\n.*?)```", DOCS.read_text(), re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The plugin as pip would leave it: the module and a dist-info declaring the entry point."""
    (tmp_path / "scimjit_acmecrm.py").write_text(documented_plugin())
    dist = tmp_path / "scimjit_acmecrm-1.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: scimjit-acmecrm\nVersion: 1.0.0\n")
    (dist / "entry_points.txt").write_text(
        "[scimjit.connectors]\nacmecrm = scimjit_acmecrm:AcmeCrmConnector\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("scimjit_acmecrm", None)


class Crm:
    """A fake AcmeCRM: agents by email, idempotent on Idempotency-Key, scriptable failures."""

    def __init__(self) -> None:
        self.agents: dict[str, dict] = {}
        self.keys: dict[str, tuple[int, dict]] = {}
        self.fail: list[int] = []
        crm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, doc):
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if crm.fail:
                    return self.reply(crm.fail.pop(0), {})
                if self.headers.get("X-Api-Key") != "k3y":
                    return self.reply(401, {})
                key = self.headers["Idempotency-Key"]
                if key in crm.keys:
                    return self.reply(*crm.keys[key])
                if body["email"] in crm.agents:
                    answer = (409, {"existing_id": crm.agents[body["email"]]["id"]})
                else:
                    agent = {"id": len(crm.agents) + 1, **body, "suspended": False}
                    crm.agents[body["email"]] = agent
                    answer = (201, agent)
                crm.keys[key] = answer
                return self.reply(*answer)

            def do_GET(self):
                email = self.path.split("email=", 1)[-1].replace("%40", "@")
                found = [a for a in crm.agents.values() if a["email"] == email]
                return self.reply(200, {"agents": found})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def app(url: str, **connector):
    table = {
        "name": "crm",
        "issuer": "http://127.0.0.1:9000",
        "audience": ["crm"],
        "match": {"claim": "email", "attribute": "emails.value"},
        "connector": {"type": "acmecrm", "api_url": url, **connector},
    }
    return load_applications({"applications": [table]})["crm"]


def call(**extra) -> Call:
    user = {
        "id": "u1",
        "userName": "alice",
        "displayName": "Alice",
        "emails": [{"value": "a@x.org", "primary": True}],
    }
    return Call(new_event("account.create", "crm", user, ["sales"], FrozenClock().now(), **extra))


def test_the_documented_plugin_is_found_and_works(installed):
    assert connectors.available()["acmecrm"] == "scimjit_acmecrm:AcmeCrmConnector"
    crm = Crm()
    try:
        connector = connectors.build(app(crm.url, api_key="k3y"))
        c = call(mode="create")
        first = asyncio.run(connector.create_account(c))
        assert (first.outcome, first.downstream_id) == (Outcome.CREATED, "1")
        assert crm.agents["a@x.org"]["teams"] == ["sales"]
        assert asyncio.run(connector.create_account(c)).outcome == Outcome.CREATED  # same key: same answer
        again = asyncio.run(connector.create_account(call(mode="create")))  # a new event for the same person
        assert (again.outcome, again.downstream_id) == (Outcome.ALREADY_EXISTS, "1")
        linked = asyncio.run(connector.create_account(call(mode="link")))
        assert (linked.outcome, linked.downstream_id) == (Outcome.LINKED, "1")
        crm.fail.append(503)
        with pytest.raises(TransientError):
            asyncio.run(connector.create_account(call(mode="create")))
    finally:
        crm.server.shutdown()


def test_its_settings_are_validated_at_load(installed):
    with pytest.raises(ConfigError, match="acmecrm needs api_url and api_key"):
        connectors.build(app("http://127.0.0.1:1"))
