"""Reading request bodies within the size limit, without buffering more than the limit."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from scimjit.scim.errors import ScimError, invalid_syntax

ACCEPTED_TYPES = ("application/scim+json", "application/json")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ScimError(413, f"Request body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ScimError(413, f"Request body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int | None = None) -> Any:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and content_type not in ACCEPTED_TYPES and not content_type.endswith("+json"):
        raise ScimError(415, f"Unsupported content type {content_type!r}; send application/scim+json")
    raw = await read_body(request, limit or request.app.state.services.settings.max_body_bytes)
    if not raw.strip():
        raise invalid_syntax("Request body is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_syntax(f"Request body is not valid JSON: {exc}") from None


async def read_json_object(request: Request, limit: int | None = None) -> dict[str, Any]:
    body = await read_json(request, limit)
    if not isinstance(body, dict):
        raise invalid_syntax("Request body must be a JSON object")
    return body
