"""The `webhook` connector: every event is a signed JSON POST to one URL.

Signature: `X-Scimjit-Signature: sha256=<hex>` where hex = HMAC-SHA256(secret, f"{timestamp}.{body}") and
`X-Scimjit-Timestamp` is the Unix time of the attempt. Signing the timestamp lets a receiver refuse replays
older than a few minutes. The signed body carries the event `id` (the same on every retry): that is what a
receiver de-duplicates on. `Idempotency-Key` is a convenience copy of it and is **not signed** (a captured
delivery replayed with a fresh key would pass a receiver that trusts the header). `verify_signature` is the
reference check for receivers.

Responses: 2xx = done (a JSON body may carry `downstreamId`, and `"result": "already_exists"` etc.);
for a link (`"mode": "link"`) a 404 means "no such account"; 408, 429, 5xx, timeouts and connection errors
are transient; any other status is permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson

from scimjit.config import ConfigError
from scimjit.delivery.connectors.base import (
    ACCOUNT_CREATE,
    ACCOUNT_DELETE,
    ACCOUNT_DISABLE,
    ACCOUNT_ENABLE,
    ACCOUNT_UPDATE,
    ROLE_GRANT,
    ROLE_REVOKE,
    Call,
    Outcome,
    PermanentError,
    Result,
    TransientError,
)
from scimjit.delivery.httpclient import LoopClient
from scimjit.entitlement.apps import check_url

_OUTCOMES = frozenset(o.value for o in Outcome)
SIGNATURE_HEADER = "X-Scimjit-Signature"
TIMESTAMP_HEADER = "X-Scimjit-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE = 300  # seconds a receiver should accept between the timestamp and its own clock

_DONE = {
    ACCOUNT_CREATE: Outcome.CREATED,
    ACCOUNT_UPDATE: Outcome.UPDATED,
    ACCOUNT_DISABLE: Outcome.DISABLED,
    ACCOUNT_ENABLE: Outcome.ENABLED,
    ACCOUNT_DELETE: Outcome.DELETED,
    ROLE_GRANT: Outcome.GRANTED,
    ROLE_REVOKE: Outcome.REVOKED,
}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """What a receiver does: recompute the HMAC over `timestamp.body`, compare in constant time, and refuse
    timestamps outside `tolerance` (replays). The compare is over bytes: `hmac.compare_digest` raises
    TypeError on a non-ASCII `str`, and a header is whatever the sender put there, so such a header is a
    plain False (401), never a crash."""
    if not signature or not timestamp or not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body).encode(), signature.encode("utf-8", "replace"))


class WebhookConnector:
    def __init__(self, settings: Mapping[str, Any], application: str) -> None:
        unknown = set(settings) - {"url", "secret", "timeout", "headers"}
        if unknown:
            raise ConfigError(
                f"application {application!r}: webhook connector: unknown key(s) {sorted(unknown)}"
            )
        url, secret = settings.get("url"), settings.get("secret")
        if not isinstance(url, str) or not isinstance(secret, str) or not secret:
            raise ConfigError(f"application {application!r}: the webhook connector needs `url` and `secret`")
        self.url = check_url(url, f"application {application!r}: connector.url")
        self._secret = secret
        self._headers = {str(k): str(v) for k, v in dict(settings.get("headers", {})).items()}
        self._client = LoopClient(float(settings.get("timeout", 10)))
        self.clock = time.time  # the signature timestamp (tests may replace it)

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookConnector(url={self.url!r})"

    async def create_account(self, call: Call) -> Result:
        return await self._post(call)

    async def update_account(self, call: Call) -> Result:
        return await self._post(call)

    async def disable_account(self, call: Call) -> Result:
        return await self._post(call)

    async def enable_account(self, call: Call) -> Result:
        return await self._post(call)

    async def delete_account(self, call: Call) -> Result:
        return await self._post(call)

    async def grant(self, call: Call) -> Result:
        return await self._post(call)

    async def revoke(self, call: Call) -> Result:
        return await self._post(call)

    async def notify(self, call: Call) -> Result:
        return await self._post(call)

    async def reconcile(self, call: Call) -> Result:
        # A webhook is one-way: there is nothing to read back.
        return Result(Outcome.RECONCILED, call.downstream_id, {"supported": False})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _post(self, call: Call) -> Result:
        event = dict(call.event)
        if call.downstream_id is not None:
            event["downstreamId"] = call.downstream_id
        body = orjson.dumps(event)
        timestamp = str(int(self.clock()))
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            TIMESTAMP_HEADER: timestamp,
            IDEMPOTENCY_HEADER: call.idempotency_key,
            "User-Agent": "scimjit-webhook/1",
        }
        try:
            response = await self._client.get().post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise TransientError(f"POST {self.url}: timed out") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"POST {self.url}: {type(exc).__name__}") from None
        return _result(call, response)


def _result(call: Call, response: httpx.Response) -> Result:
    status = response.status_code
    if 200 <= status < 300:
        data = _json(response)
        downstream_id = data.get("downstreamId")
        outcome = _DONE.get(call.type, Outcome.NOTIFIED)
        if call.type == ACCOUNT_CREATE and call.mode == "link":
            outcome = Outcome.LINKED
        if status == 202:
            outcome = Outcome.IN_PROGRESS
        if isinstance(data.get("result"), str) and data["result"] in _OUTCOMES:
            outcome = Outcome(data["result"])
        return Result(outcome, str(downstream_id) if downstream_id is not None else call.downstream_id)
    if status == 404 and call.type == ACCOUNT_CREATE and call.mode == "link":
        return Result(Outcome.NOT_FOUND)
    if status in (408, 429) or status >= 500:
        raise TransientError(f"HTTP {status}", retry_after=_retry_after(response))
    raise PermanentError(f"HTTP {status}: {response.text[:200]}")


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
