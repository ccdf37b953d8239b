"""POST /Bulk (RFC 7644 §3.7): operations in order, `bulkId` references resolved, `failOnErrors` honoured.

Each operation is its own transaction, as the RFC allows: a failed operation leaves the earlier ones done and
is reported in place. Operations run one after the other, each through `store.resources.run_write`, so a
password is hashed off the event loop between them. Limits (`maxOperations`, `maxPayloadSize`) are advertised and enforced with 413; an
operation whose `data` nests deeper than `MAX_DATA_DEPTH` is `400 invalidSyntax` in place (resolving its
`bulkId` references walks it, and no SCIM resource is that deep).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scimjit.http.apidoc import AUTH_ERRORS, doc, errors, ref, resp
from scimjit.http.apidoc import body as request_body
from scimjit.http.auth import require
from scimjit.http.body import read_json_object
from scimjit.http.context import context, services
from scimjit.http.responses import scim_response
from scimjit.scim.errors import ScimError, invalid_syntax, invalid_value
from scimjit.scim.projection import Projection
from scimjit.store import resources as ops

BULK_REQUEST_URN = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE_URN = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"
BULK_REQUEST: dict[str, Any] = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": {"type": "string", "enum": [BULK_REQUEST_URN]}},
        "failOnErrors": {"type": "integer", "minimum": 1},
        "Operations": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "method": {"type": "string", "enum": ["POST", "PUT", "PATCH", "DELETE"]},
                    "bulkId": {"type": "string"},
                    "version": {"type": "string"},
                    "path": {"type": "string"},
                    "data": {"type": "object"},
                },
                "required": ["method", "path"],
            },
        },
    },
    "required": ["schemas", "Operations"],
}
BULK_RESPONSE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "schemas": {"type": "array", "items": {"type": "string"}},
        "Operations": {"type": "array", "items": {"type": "object"}},
    },
}
PATH = re.compile(r"^/(Users|Groups)(?:/([^/]+))?$")
MAX_DATA_DEPTH = 32  # a User with an extension's complex multi-valued attribute is 5 levels deep


class UnresolvedReference(Exception):
    pass


def _resolve(value: Any, ids: dict[str, str], depth: int = 0) -> Any:
    """Replace every `bulkId:<id>` string with the id the earlier operation created.

    The walk is bounded (`MAX_DATA_DEPTH`): a body nested hundreds of levels deep would otherwise exhaust the
    interpreter's stack and answer 500 with a traceback in the log."""
    if isinstance(value, str) and value.startswith("bulkId:"):
        ref = value[len("bulkId:") :]
        if ref not in ids:
            raise UnresolvedReference(ref)
        return ids[ref]
    if isinstance(value, dict | list) and depth >= MAX_DATA_DEPTH:
        raise invalid_syntax(f"bulk operation data nests deeper than {MAX_DATA_DEPTH} levels")
    if isinstance(value, dict):
        return {k: _resolve(v, ids, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ids, depth + 1) for v in value]
    return value


def _run_one(ctx: ops.Context, op: dict[str, Any], ids: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
    method = str(op.get("method", "")).upper()
    match = PATH.match(str(op.get("path", "")))
    if method not in {"POST", "PUT", "PATCH", "DELETE"}:
        raise invalid_syntax(f"unsupported bulk method {op.get('method')!r}")
    if not match:
        raise invalid_value(f"bulk path must be /Users, /Groups or /<type>/<id>, got {op.get('path')!r}")
    kind = ops.USER if match.group(1) == "Users" else ops.GROUP
    target = match.group(2)
    if target and target.startswith("bulkId:"):
        target = _resolve(target, ids)
    data = _resolve(op.get("data"), ids)
    version = op.get("version")
    if method == "POST":
        if target:
            raise invalid_value("POST goes to the collection, not to a resource")
        if not op.get("bulkId"):
            raise invalid_syntax("POST operations need a bulkId")
        fn = ops.create_user if kind == ops.USER else ops.create_group
        written = fn(ctx, data or {})
        return 201, written.document
    if not target:
        raise invalid_value(f"{method} needs a resource path /{match.group(1)}/<id>")
    if method == "DELETE":
        (ops.delete_user if kind == ops.USER else ops.delete_group)(ctx, target, version)
        return 204, None
    if not isinstance(data, dict):
        raise invalid_syntax(f"{method} needs `data`")
    if method == "PUT":
        written = (ops.replace_user if kind == ops.USER else ops.replace_group)(ctx, target, data, version)
    else:
        written = (ops.patch_user if kind == ops.USER else ops.patch_group)(ctx, target, data, version)
    return 200, written.document


async def _run_all(
    ctx: ops.Context, operations: list[Any], fail_on_errors: int | None
) -> list[dict[str, Any]]:
    ids: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    errors = 0
    for op in operations:
        if fail_on_errors is not None and errors >= fail_on_errors:
            break
        if not isinstance(op, dict):
            op = {}
        result: dict[str, Any] = {"method": op.get("method")}
        if op.get("bulkId"):
            result["bulkId"] = op["bulkId"]
        try:
            status, doc = await ops.run_write(ctx, _run_one, op, ids)
        except UnresolvedReference as exc:
            status, doc = (
                409,
                ScimError(409, f"bulkId {exc.args[0]!r} is not resolvable", "invalidValue").to_dict(),
            )
            errors += 1
        except ScimError as exc:
            status, doc = exc.status, exc.to_dict()
            errors += 1
        else:
            if doc is not None:
                result["location"] = doc["meta"]["location"]
                result["version"] = doc["meta"]["version"]
                if status == 201 and op.get("bulkId"):
                    ids[op["bulkId"]] = doc["id"]
            elif isinstance(op.get("path"), str):
                result["location"] = op["path"]
        result["status"] = str(status)
        if status >= 400:
            result["response"] = doc
        results.append(result)
    return results


@doc(
    "Bulk operations (RFC 7644 §3.7)",
    "SCIM",
    {"200": resp("BulkResponse", ref("BulkResponse")), **errors(400, 413, 415, *AUTH_ERRORS)},
    body=request_body(ref("BulkRequest")),
    components={"BulkRequest": BULK_REQUEST, "BulkResponse": BULK_RESPONSE},
)
async def bulk(request: Request) -> Response:
    require(request, "scim:write")
    settings = services(request).settings
    try:
        body = await read_json_object(request, settings.max_bulk_payload_bytes)
    except ScimError as exc:
        if exc.status == 413:
            raise ScimError(
                413, f"Bulk payload exceeds maxPayloadSize ({settings.max_bulk_payload_bytes} bytes)"
            ) from None
        raise
    schemas = body.get("schemas")
    if not isinstance(schemas, list) or BULK_REQUEST_URN not in schemas:
        raise invalid_syntax(f"schemas must contain {BULK_REQUEST_URN}")
    operations = body.get("Operations")
    if not isinstance(operations, list):
        raise invalid_syntax("Operations must be a list")
    if len(operations) > settings.max_bulk_operations:
        raise ScimError(
            413,
            f"Bulk request has {len(operations)} operations; maxOperations is {settings.max_bulk_operations}",
        )
    fail_on_errors = body.get("failOnErrors")
    if fail_on_errors is not None and (not isinstance(fail_on_errors, int) or fail_on_errors < 1):
        raise invalid_syntax("failOnErrors must be a positive integer")
    ctx = context(request, Projection(frozenset(), frozenset({"members", "groups"})))
    results = await _run_all(ctx, operations, fail_on_errors)
    return scim_response({"schemas": [BULK_RESPONSE_URN], "Operations": results})
