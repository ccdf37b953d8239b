"""OpenAPI metadata declared next to each handler, and the building blocks to write it.

A handler is described with `@doc(...)` (or `describe(endpoint, ...)` for handlers made by a factory): its
summary, tag, parameters, request body, responses, whether it needs a token, and the component schemas of its
own request bodies. openapi.py walks the route
table and reads these, so a route without a description fails the build, and a description cannot outlive
its route. Settings-dependent parts (discovery and /metrics may be anonymous) are callables of Settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from scimjit.config import Settings

SCIM_JSON = "application/scim+json"
JSON = "application/json"
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
AUTH_ERRORS = (401, 403, 429)

Json = dict[str, Any]
E = TypeVar("E", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation of the document (for every method of the route it is attached to)."""

    summary: str
    tag: str
    responses: Mapping[str, Any] | Callable[[Settings], Mapping[str, Any]]
    params: Sequence[Mapping[str, Any]] = ()
    body: Mapping[str, Any] | None = None
    secure: bool | Callable[[Settings], bool] = True
    description: str | None = None
    operation_id: str | None = None
    components: Mapping[str, Json] = field(default_factory=dict)  # the schemas its body refers to, by name

    def render(self, settings: Settings) -> Json:
        responses = self.responses(settings) if callable(self.responses) else self.responses
        secure = self.secure(settings) if callable(self.secure) else self.secure
        op: Json = {"summary": self.summary, "tags": [self.tag], "responses": dict(responses)}
        if self.description:
            op["description"] = self.description
        if self.params:
            op["parameters"] = [dict(p) for p in self.params]
        if self.body:
            op["requestBody"] = dict(self.body)
        op["security"] = BEARER if secure else []
        if self.operation_id:
            op["operationId"] = self.operation_id
        return op


def describe(endpoint: E, operation: Operation) -> E:
    endpoint.openapi = operation  # type: ignore[attr-defined]
    return endpoint


def doc(summary: str, tag: str, responses: Any, **kwargs: Any) -> Callable[[E], E]:
    """Decorator: the endpoint's OpenAPI operation (see Operation for the keywords)."""
    operation = Operation(summary, tag, responses, **kwargs)
    return lambda endpoint: describe(endpoint, operation)


def operation_of(endpoint: Any) -> Operation | None:
    found = getattr(endpoint, "openapi", None)
    return found if isinstance(found, Operation) else None


# ---------------------------------------------------------------- building blocks


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def query(name: str, schema: Json, description: str) -> Json:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path(name: str, schema: Json | None = None) -> Json:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


LIST_PARAMS = [
    query("filter", {"type": "string"}, 'SCIM filter (RFC 7644 §3.4.2.2), e.g. `userName eq "bjensen"`'),
    query("sortBy", {"type": "string"}, "Attribute to sort by"),
    query("sortOrder", {"type": "string", "enum": ["ascending", "descending"]}, "Sort direction"),
    query("startIndex", {"type": "integer"}, "1-based index of the first result"),
    query("count", {"type": "integer"}, "Page size (at most `max_page_size`)"),
]
PROJECTION_PARAMS = [
    query("attributes", {"type": "string"}, "Comma-separated attributes to return"),
    query("excludedAttributes", {"type": "string"}, "Comma-separated attributes to leave out"),
]
SCIM_LIST_PARAMS = [
    *LIST_PARAMS,
    query("cursor", {"type": "string"}, "Cursor paging (RFC 9865); empty for the first page"),
    *PROJECTION_PARAMS,
]


def body(schema: Json, media: str = SCIM_JSON, *, required: bool = True) -> Json:
    return {
        "required": required,
        "content": {media: {"schema": schema}, **({JSON: {"schema": schema}} if media == SCIM_JSON else {})},
    }


def resp(description: str, schema: Json | None = None, media: str = SCIM_JSON) -> Json:
    out: Json = {"description": description}
    if schema is not None:
        out["content"] = {media: {"schema": schema}}
    return out


ERROR_TEXT = {
    400: "Invalid request (scimType says why)",
    401: "No valid token",
    403: "The token lacks the scope",
    404: "Not found",
    409: "Conflict (uniqueness)",
    412: "ETag mismatch (If-Match)",
    413: "Body or Bulk request too large",
    415: "Unsupported content type",
    429: "Rate limit: retry after `Retry-After` seconds",
    501: "Not implemented",
    503: "Not ready / downstream unavailable",
}


def errors(*codes: int, media: str = SCIM_JSON, schema: str = "Error") -> Json:
    """SCIM error documents for `codes`."""
    return {str(c): resp(ERROR_TEXT[c], ref(schema), media) for c in codes}


def jit_errors(*codes: int) -> Json:
    """The JIT error shape `{"error", "detail"}` for `codes`."""
    return errors(*codes, media=JSON, schema="JitError")
