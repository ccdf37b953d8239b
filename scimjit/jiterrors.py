"""The one error type of the JIT API: a refusal with an HTTP status, a stable reason code and a human detail.

Login (provisioning), OIDC verification, grants and access requests (access) and the sign-in flow (http) all
refuse the same way, and the JIT sub-application renders every refusal with one exception handler as
`{"error": reason, "detail": detail}`. It lives at the top of the package, importing nothing of scimjit, so
that every floor (entitlement, provisioning, access, http, cli) can raise and catch it without an upward
import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class JitError(Exception):
    """A refused JIT operation. `retry_after` (seconds) becomes a `Retry-After` header: set it when the
    refusal is temporary (an issuer that cannot be reached now, a rate limit). `extra` adds members to the
    body after `error` and `detail` (which it cannot replace)."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.extra = dict(extra or {})  # more members of the body (e.g. a schedule's bad shifts)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after
        self.headers = dict(headers or {})
        if retry_after:
            self.headers.setdefault("Retry-After", str(retry_after))

    def to_json(self) -> dict[str, Any]:
        return {"error": self.reason, "detail": self.detail, **self.extra}
