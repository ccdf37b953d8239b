"""/openapi.json describes exactly the routes the app serves, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.routing import Mount, Route

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.http.openapi import build
from scimjit.scim.schema import load_registry
from scimjit.services import Services

METHODS = {"get", "post", "put", "patch", "delete"}


def served(routes, prefix: str = "") -> set[tuple[str, str]]:
    """(path template, method) of every endpoint, mounts included; `{id:int}` is spelled `{id}`."""
    out: set[tuple[str, str]] = set()
    for route in routes:
        if isinstance(route, Mount):
            out |= served(route.routes, prefix + route.path)
        elif isinstance(route, Route) and route.include_in_schema:  # the console's pages are not API
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
            out |= {(path, m.lower()) for m in route.methods or () if m.lower() in METHODS}
    return out


def documented(spec) -> set[tuple[str, str]]:
    return {(path, m) for path, ops in spec["paths"].items() for m in ops if m in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists(db):
    settings = Settings.load(environ={}, database_url=db.url)
    app = create_app(services=Services.build(settings, db=db))
    spec = build(settings, load_registry())
    routes = served(app.routes)
    assert routes - documented(spec) == set(), "routes without an OpenAPI description"
    assert documented(spec) - routes == set(), "described operations the app does not serve"
    assert ("/jit/v1/audit", "get") in routes and ("/scim/v2/Users/{id}", "patch") in routes
    hidden = {r.path for r in app.routes if isinstance(r, Route) and not r.include_in_schema}
    assert hidden and all(p == "/console" or p.startswith("/console/") for p in hidden)


def test_the_document_is_valid_openapi_and_served_without_a_token(server):
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    spec = r.json()
    assert spec["openapi"].startswith("3.1")
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A scimjit token: sjt_<id>_<secret>; or an OAuth 2.0 access token of a configured"
        " authorization server ([[authorization_servers]]: RFC 9068 JWT or, by introspection, opaque)",
    }
    import schemathesis  # parses and checks the document (dev dependency)

    schema = schemathesis.openapi.from_dict(spec)
    operations = list(schema.get_all_operations())
    assert len(operations) == len(documented(spec))
    assert all(op.ok() for op in operations)
    # every $ref resolves
    text = r.text
    for name in set(re.findall(r"#/components/schemas/(\w+)", text)):
        assert name in spec["components"]["schemas"], name


def test_security_follows_the_settings(server):
    spec = server.client.get(f"{server.url}/openapi.json").json()
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"bearerAuth": []}]  # a token by default
    assert spec["paths"]["/scim/v2/Users"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/scim/v2/Schemas"]["get"]["security"] == [{"bearerAuth": []}]
    settings = Settings.load(environ={}, anonymous_discovery=True, metrics_token_required=False)
    spec = build(settings, load_registry())
    assert spec["paths"]["/scim/v2/Schemas"]["get"]["security"] == []
    assert spec["paths"]["/metrics"]["get"]["security"] == []


def test_request_bodies_come_from_the_schema_registry():
    spec = build(Settings.load(environ={}), load_registry())
    user_in = spec["components"]["schemas"]["UserInput"]
    assert "userName" in user_in["required"] and "id" not in user_in["properties"]
    assert user_in["properties"]["emails"]["type"] == "array"
    assert "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" in user_in["properties"]
    user_out = spec["components"]["schemas"]["User"]
    assert "password" not in user_out["properties"]  # returned: never
    audit = spec["components"]["schemas"]["AuditEvent"]["properties"]
    assert audit["at"] == {"type": "string", "format": "date-time"} and audit["id"] == {"type": "integer"}


async def _undescribed(request):  # a handler without @doc
    raise AssertionError("never called")


def test_a_route_without_a_description_fails_the_build():
    from starlette.routing import Router

    from scimjit.http.app import route_table

    routes = [*route_table(), Mount("/extra", app=Router([Route("/thing/{id:int}", _undescribed)]))]
    with pytest.raises(LookupError, match=r"GET /extra/thing/\{id\} has no OpenAPI description"):
        build(Settings.load(environ={}), load_registry(), routes=routes)


def test_operations_come_from_the_handlers_and_follow_the_route_table():
    from scimjit.http.app import route_table
    from scimjit.http.jit import logins

    settings = Settings.load(environ={})
    spec = build(settings, load_registry())
    login = spec["paths"]["/jit/v1/logins"]["post"]
    assert login == {**logins.login.openapi.render(settings), "operationId": "postLogins"}
    assert login["responses"]["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JitError"
    }
    # the admin view's GET and the access module's POST share /jit/v1/grants
    assert set(spec["paths"]["/jit/v1/grants"]) == {"get", "post"}
    assert spec["paths"]["/scim/v2/Users/{id}"]["patch"]["operationId"] == "patchUser"
    # a route table without the JIT API documents no JIT path
    scim_only = [r for r in route_table() if getattr(r, "path", "") != "/jit/v1"]
    assert not any(p.startswith("/jit/") for p in build(settings, load_registry(), routes=scim_only)["paths"])
