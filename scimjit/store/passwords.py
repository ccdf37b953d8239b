"""Passwords an IdP sends are never stored in plaintext: scrypt (stdlib) with a random salt.

scimjit does not authenticate users with them; the hash exists so a downstream that needs to verify a
password can, and so that nothing reversible sits in the database.

The cost is OWASP's current recommendation for scrypt (Password Storage Cheat Sheet: N=2^17, r=8, p=1, i.e.
128 MiB and a few hundred milliseconds per hash). That is far too long for the event loop, so the HTTP layer
hashes with `hash_password_off_loop`: in a worker thread, at most `MAX_CONCURRENT_HASHES` at once per
process, so a Bulk of a thousand password writes neither blocks the server nor asks for 128 GiB. The
parameters are part of the stored string, so hashes made with older parameters (N=2^14) stay verifiable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from weakref import WeakKeyDictionary

import anyio.to_thread
from anyio import CapacityLimiter

N, R, P = 2**17, 8, 1
# scrypt holds 128 * r * N bytes (128 MiB at the parameters above) for the length of one hash
MAX_CONCURRENT_HASHES = max(1, min(4, os.cpu_count() or 1))
_limiters: WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = WeakKeyDictionary()


def hash_password(password: str) -> str:
    """The stored form `scrypt$N$r$p$salt$digest`. Blocking (see the module docstring): async code calls
    `hash_password_off_loop`."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password.encode(), salt, N, R, P, 32)
    return "$".join(["scrypt", str(N), str(R), str(P), _b64(salt), _b64(digest)])


async def hash_password_off_loop(password: str) -> str:
    """`hash_password` in a worker thread, behind the per-process bound on concurrent hashes."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(MAX_CONCURRENT_HASHES)
    return await anyio.to_thread.run_sync(hash_password, password, limiter=limiter)


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    candidate = _scrypt(password.encode(), _unb64(salt), int(n), int(r), int(p), len(_unb64(digest)))
    return hmac.compare_digest(candidate, _unb64(digest))


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """OpenSSL refuses more than 32 MiB unless told: allow what these parameters need, and no more."""
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
