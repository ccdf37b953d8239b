"""Rate limits: a token bucket per key, in process memory; per token, and per client address.

Why a token bucket: an IdP syncs in bursts, so a client may spend `burst` requests at once and then `rate`
per second; a steady client never sees a 429. Why in memory: the check is a dict lookup and a little
arithmetic on the hot path, with no database round trip. The price is that the limits are **per process**:
`scimjit serve --workers N` lets a client make up to N times the rate in total. A refused request gets 429
with `Retry-After` in whole seconds.

**Per token** (`rate_limit_per_second`, default 1,000/s, bursts of 2,000): a ceiling no legitimate client
reaches (Entra applies no limit of its own to non-gallery apps and escrows failed objects for hours, so a
low default costs provisioning time); it only stops a runaway or stolen token.

**Per client address** (`client_rate_limit_per_second`, default 20/s, bursts of 200): bounds what a caller
without a valid token can make the server do. It is charged only by work no valid scimjit token vouches for:

- a request whose scimjit token is missing or wrong (charged after the failed check; while the address's
  bucket is empty such requests get 429 *before* the token is looked up, so a flood of bogus tokens causes
  no database work); the same for an OAuth access token that does not verify (scimjit.http.oauth: while
  the bucket is empty it is neither introspected nor checked against the issuer's keys);
- every request to the anonymous sign-in endpoints (`/jit/v1/apps/{name}/login`, `/callback`) and every
  request that proves a user by an ID token alone (`/jit/v1/requests…` with `id_token`): charged before
  any work;
- a login hook call (`POST /jit/v1/logins`) whose ID token is refused (401): checked before the ID token
  is verified, charged after it fails.

A request with a valid token is charged to its token's bucket only, so an IdP that shares an address with
a flood keeps working: tokens that verified recently are remembered (a bounded set of their hashes, never
the tokens) and pass the pre-check even when the address's bucket is empty; the full verification then
runs as usual, so a revoked token gains nothing but one lookup. The address is the socket peer as uvicorn
reports it (behind a proxy: `--forwarded-allow-ips`, see docs/operations.md). Buckets live in bounded LRU
maps, so spraying addresses costs at most `max_keys` entries.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request

from scimjit.http.client import client_address
from scimjit.metrics import RATE_LIMITED
from scimjit.scim.errors import ScimError
from scimjit.store.tokens import token_digest

MAX_KEYS = 65_536  # buckets per limiter: about 10 MB at most, whatever the number of addresses seen


class RateLimiter:
    """`rate` requests per second with bursts of up to `burst`, per key; `rate <= 0` disables the limit.

    `clock` returns monotonic seconds; tests pass a fake one instead of sleeping. At most `max_keys` buckets
    are kept (least recently used go first): a forgotten key starts again with a full bucket, which only
    ever errs towards letting a client through.
    """

    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_keys: int = MAX_KEYS,
        subject: str = "token",
    ) -> None:
        self.rate = float(rate)
        self.burst = max(float(burst), 1.0)
        self.clock = clock
        self.max_keys = max(int(max_keys), 1)
        self.subject = subject
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens left, last refill]

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str) -> tuple[list[float], float]:
        """The key's bucket (made full when new) and its tokens refilled up to now."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[0], bucket[1] = tokens, now
        return bucket, tokens

    def wait_time(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        bucket, tokens = self._tokens(key)
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return 0.0
        return (1.0 - tokens) / self.rate

    def peek(self, key: str) -> float:
        """Like `wait_time`, without taking: 0.0 when a request would be allowed now."""
        if self.rate <= 0 or key not in self._buckets:
            return 0.0
        _, tokens = self._tokens(key)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate

    def charge(self, key: str) -> None:
        """Take one request from `key`'s bucket if one is left (a failure already answered)."""
        self.wait_time(key)

    def enforce(self, key: str) -> None:
        """Raise the SCIM 429 error when `key` is over its rate (taking one request when it is not)."""
        self._refuse(self.wait_time(key))

    def enforce_peek(self, key: str) -> None:
        """Raise the SCIM 429 error when `key`'s bucket is empty, without taking from it."""
        self._refuse(self.peek(key))

    def _refuse(self, wait: float) -> None:
        if wait > 0:
            RATE_LIMITED.inc()
            raise ScimError(
                429,
                f"Too many requests for this {self.subject}: the limit is {self.rate:g}/s"
                f" (bursts of {self.burst:g})",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )


class KnownTokens:
    """Hashes of tokens that verified recently, so a valid token skips the address pre-check (bounded)."""

    def __init__(self, max_keys: int = 4096) -> None:
        self.max_keys = max_keys
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    @staticmethod
    def key(token: str) -> bytes:
        return token_digest(token)  # the token store's cache key too: `auth` passes it on to `verify`

    def __contains__(self, key: bytes) -> bool:
        return key in self._seen

    def add(self, key: bytes) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        if len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)

    def discard(self, key: bytes) -> None:
        self._seen.pop(key, None)


def client_limiter(request: Request) -> RateLimiter | None:
    limiter: RateLimiter | None = getattr(request.app.state, "client_limiter", None)
    return limiter


def charge_client(request: Request) -> None:
    """Anonymous or ID-token-only endpoints: every request takes one from its address (429 when empty)."""
    limiter = client_limiter(request)
    if limiter is not None:
        limiter.enforce(client_address(request))


def check_client(request: Request) -> None:
    """Before expensive work that is charged only if it fails: 429 when the address's bucket is empty."""
    limiter = client_limiter(request)
    if limiter is not None:
        limiter.enforce_peek(client_address(request))


def charge_client_failure(request: Request) -> None:
    """A failed authentication: take one from the address's bucket (the answer is already decided)."""
    limiter = client_limiter(request)
    if limiter is not None:
        limiter.charge(client_address(request))
