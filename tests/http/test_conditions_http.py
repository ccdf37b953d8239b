"""Request conditions over a real socket (SQLite and PostgreSQL): the filer's address is the HTTP client as
uvicorn reports it (`client_address`), X-Forwarded-For counts only from a trusted proxy (uvicorn's
`forwarded_allow_ips`), and the policies with their conditions are listed at GET /jit/v1/policies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.services import compose
from tests.access_helpers import config
from tests.live_server import free_port

USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"

POLICY = """
[[jit.policies]]
group = "prod-admins"
max_duration = "8h"
approvers = ["sre-leads"]
auto_approve = { max_duration = "2h" }
conditions = { networks = ["10.0.0.0/8"] }
"""


@contextmanager
def served(app, forwarded_allow_ips: str) -> Iterator[str]:
    """Like tests.live_server.serve, with the proxies uvicorn believes (what `serve --forwarded-allow-ips` sets)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", forwarded_allow_ips=forwarded_allow_ips
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def services(db, clock):
    settings = Settings.load(
        environ={},
        database_url=db.url,
        token_cache_seconds=0,
        document=config(jit=POLICY),
        run_sweeper=False,
        run_worker=False,
    )
    return compose(settings, db=db, clock=clock)


def seed(url: str, admin: dict[str, str]) -> None:
    with httpx.Client(base_url=f"{url}/scim/v2", headers=admin, timeout=30) as scim:
        alice = scim.post("/Users", json={"schemas": [USER_URN], "userName": "alice"}).json()["id"]
        for name in ("prod-admins", "sre-leads"):
            scim.post("/Groups", json={"schemas": [GROUP_URN], "displayName": name, "members": []})
        assert alice


def ask(url, headers, forwarded_for=None):
    if forwarded_for:
        headers = {**headers, "X-Forwarded-For": forwarded_for}
    body = {"user": "alice", "group": "prod-admins", "duration": "1h", "justification": "incident 9"}
    return httpx.post(f"{url}/jit/v1/requests", json=body, headers=headers, timeout=30)


def test_the_filers_address_decides_and_only_a_trusted_proxy_names_it(services):
    admin = {"Authorization": f"Bearer {services.tokens.create('admin', ['admin'])}"}
    app = create_app(services=services)
    with served(app, forwarded_allow_ips="192.0.2.1") as url:  # 127.0.0.1 is not a trusted proxy here
        seed(url, admin)
        refused = ask(url, admin, forwarded_for="10.1.2.3")  # a header from an untrusted peer is ignored
        assert refused.status_code == 403
        assert refused.json() == {
            "error": "condition_not_met",
            "detail": "network: the client address 127.0.0.1 is not in the allowed networks: 10.0.0.0/8",
        }
        audit = httpx.get(
            f"{url}/jit/v1/audit",
            params={"filter": 'action eq "request.create" and outcome eq "refused"'},
            headers=admin,
        ).json()
        assert audit["totalResults"] == 1
    with served(create_app(services=services), forwarded_allow_ips="127.0.0.1") as url:  # a local proxy
        ok = ask(url, admin, forwarded_for="10.1.2.3")
        assert ok.status_code == 201, ok.text
        assert ok.json()["status"] == "approved"
        policies = httpx.get(f"{url}/jit/v1/policies", headers=admin).json()["policies"]
        assert policies[0]["conditions"] == {"windows": [], "networks": ["10.0.0.0/8"]}
        assert policies[0]["outside"] == "refuse"
        assert httpx.get(f"{url}/jit/v1/policies").status_code == 401
