"""The console's test world: the pytest-iam OIDC provider with a client for the console, a directory with
alice (engineer), bob (approver), carol (console admin) and the requestable group prod-admins, and a way to
sign a person in through the real authorization code flow (the provider's session opened by pytest-iam)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.jit_helpers import add_group, add_user

CLIENT_ID = "scimjit-console"
CLIENT_SECRET = "console-s3cret"
PEOPLE = ("alice", "bob", "carol", "dave")


def console_document(issuer: str, **console: Any) -> dict[str, Any]:
    """The config document: `[console]` against `issuer` and the prod-admins policy."""
    return {
        "console": {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "match": {"claim": "email", "attribute": "emails.value"},
            "admin_groups": ["console-admins"],
            **console,
        },
        "jit": {
            "policies": [
                {
                    "group": "prod-admins",
                    "eligible": ["engineers"],
                    "max_duration": "8h",
                    "approvers": ["sre-leads"],
                    "description": "Production administration",
                }
            ]
        },
    }


def seed_directory(db: Any) -> dict[str, str]:
    """SCIM users and groups; returns user ids by name."""
    ids = {name: add_user(db, name, emails=[f"{name}@example.com"]) for name in PEOPLE}
    add_group(db, "engineers", [ids["alice"], ids["bob"], ids["dave"]])
    add_group(db, "sre-leads", [ids["bob"], ids["dave"]])
    add_group(db, "console-admins", [ids["carol"]])
    add_group(db, "prod-admins", [])
    return ids


class Idp:
    """The pytest-iam server seen from the console's side. One per provider (`of`): the provider keeps one
    console client, and a second client with the same id would shadow the first."""

    _known: dict[int, Idp] = {}

    @classmethod
    def of(cls, iam: Any) -> Idp:
        if id(iam) not in cls._known:
            cls._known[id(iam)] = cls(iam)
        return cls._known[id(iam)]

    def __init__(self, iam: Any) -> None:
        self.iam = iam
        self.issuer = iam.url.rstrip("/")
        self.people: dict[str, Any] = {}
        self.client: Any = None

    def register(self, base_url: str) -> Any:
        """The console's client at the provider, redirecting to `base_url` (one client, re-pointed per test)."""
        if self.client is not None:
            self.client.redirect_uris = [f"{base_url}/console/callback"]
            self.iam.backend.save(self.client)
            return self.client
        client = self.iam.models.Client(
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            client_name="scimjit console",
            redirect_uris=[f"{base_url}/console/callback"],
            grant_types=["authorization_code"],
            response_types=["code"],
            scope=["openid", "profile", "email"],
            token_endpoint_auth_method="client_secret_basic",
        )
        self.iam.backend.save(client)
        client.audience = [client]
        self.iam.backend.save(client)
        for name in PEOPLE:
            if name not in self.people:
                self.people[name] = self.iam.random_user(user_name=name, emails=[f"{name}@example.com"])
            self.iam.consent(self.people[name], client)
        self.client = client
        return client

    def as_(self, name: str) -> None:
        """The provider treats every request as `name`'s (pytest-iam skips its own login screen)."""
        self.iam.login(self.people[name])


def sign_in(idp: Idp, base_url: str, name: str) -> httpx.Client:
    """A client signed in to the console as `name`, through /console/login, the provider and the callback."""
    client = httpx.Client(base_url=base_url, timeout=30)
    idp.as_(name)
    try:
        start = client.get("/console/login")
        assert start.status_code == 302, start.text
        at_idp = httpx.get(start.headers["location"], timeout=30)
        assert at_idp.status_code == 302, at_idp.text
        back = client.get(at_idp.headers["location"])
        assert back.status_code == 303, back.text
    finally:
        idp.iam.logout()
    return client
