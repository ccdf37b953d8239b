"""`POST /jit/v1/logins` (scope `login`, bound to one application; `admin` may log in to any): the login hook.

The application sends the user's ID token, or, for an application with an `[applications.saml]` table, the
SAML Response its IdP posted (base64, as received; `in_response_to` the id of the AuthnRequest it sent, if
any), and, for network conditions, the user's `client_ip` (the caller is the application's server, so the
socket peer is not the user). scimjit verifies it, checks the application's login conditions, links or
creates the user's account in the application and answers the roles. Refusals are `JitError`s with a stable
reason code.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scimjit.http.apidoc import JSON, body, doc, jit_errors, ref, resp
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.jit.errors import error, json_response
from scimjit.http.ratelimit import charge_client_failure, check_client
from scimjit.jiterrors import JitError
from scimjit.provisioning.saml import MAX_SAML_RESPONSE_B64
from scimjit.store.tokens import Principal

# a base64 SAML Response of the largest size accepted, and room for the JSON around it
MAX_LOGIN_BODY = MAX_SAML_RESPONSE_B64 + 16 * 1024
LOGIN_REQUEST = {
    "oneOf": [
        {
            "type": "object",
            "description": "OIDC: the user's ID token",
            "properties": {
                "application": {"type": "string"},
                "id_token": {"type": "string"},
                "client_ip": {
                    "type": "string",
                    "description": "the user's IP address as the application saw it (its login network conditions)",
                },
            },
            "required": ["application", "id_token"],
        },
        {
            "type": "object",
            "description": "SAML: the Response the IdP posted to the application's ACS URL",
            "properties": {
                "application": {"type": "string"},
                "saml_response": {"type": "string", "description": "the SAMLResponse form field, base64"},
                "in_response_to": {"type": "string", "description": "the ID of the AuthnRequest sent"},
                "client_ip": {
                    "type": "string",
                    "description": "the user's IP address as the application saw it (its login network conditions)",
                },
            },
            "required": ["application", "saml_response"],
        },
    ]
}
USAGE = 'send {"application": NAME, "id_token": JWT} or {"application": NAME, "saml_response": BASE64}'


@doc(
    "Login hook: verify an ID token or a SAML Response, link or create the user's account, return roles",
    "JIT",
    {
        "200": resp("Allowed: account, user and roles", {"type": "object"}, JSON),
        "202": resp("Allowed; the account is still being created", {"type": "object"}, JSON),
        **jit_errors(400, 401, 403, 404, 413, 415, 429, 503),
    },
    body=body(ref("LoginRequest"), JSON),
    components={"LoginRequest": LOGIN_REQUEST},
)
async def login(request: Request) -> Response:
    principal: Principal = require(request, "login")
    payload = await read_json_object(request, MAX_LOGIN_BODY)
    application, id_token = payload.get("application"), payload.get("id_token")
    client_ip = payload.get("client_ip")
    saml_response, in_response_to = payload.get("saml_response"), payload.get("in_response_to")
    if (
        not isinstance(application, str)
        or (id_token is None) == (saml_response is None)  # exactly one credential
        or not isinstance(id_token if saml_response is None else saml_response, str)
        or (in_response_to is not None and (saml_response is None or not isinstance(in_response_to, str)))
    ):
        return error(400, "invalid_request", USAGE)
    if client_ip is not None and not isinstance(client_ip, str):
        return error(400, "invalid_request", "`client_ip` must be the user's IP address as a string")
    if "admin" not in principal.scopes and principal.application != application:
        return error(403, "wrong_application", f"this token may only log in to {principal.application!r}")
    request_id = request.scope.get("state", {}).get("request_id")
    check_client(request)  # a refused ID token is charged to the address; an empty bucket stops them first
    engine = request.app.state.services.engine
    try:
        if isinstance(saml_response, str):
            result = await engine.saml_login(
                application,
                saml_response,
                in_response_to=in_response_to,
                caller=principal.name,
                request_id=request_id,
                client_ip=client_ip,
            )
        else:
            result = await engine.login(
                application, id_token, caller=principal.name, request_id=request_id, client_ip=client_ip
            )
    except JitError as exc:
        if exc.status == 401:
            charge_client_failure(request)
        raise
    return json_response(result.body, result.status_code, result.headers)


routes: list[BaseRoute] = [Route("/logins", login, methods=["POST"])]
