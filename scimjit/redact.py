"""Keeping secrets out of the audit trail and the logs: one scrubber, used by both.

Two nets, because either alone leaks: keys that *name* a secret (`password`, `client_secret`, `id_token`,
`Authorization`, ...) are dropped at any depth whatever their value, and string values that *look* like a
secret (a scimjit token `sjt_...`, a `Bearer ...`/`Basic ...` credential, a JWT) are masked wherever they
appear, including inside free text such as an error message from a downstream application.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

# Key fragments that mark a secret, compared after lower-casing and removing `_`, `-` and spaces, so
# `client_secret`, `ClientSecret`, `id-token` and `X-Api-Key` are all caught.
_SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "credential",
    "apikey",
    "privatekey",
    "assertion",
    "codeverifier",
)
_SECRET_KEY_EXCEPTIONS = frozenset({"tokenname"})  # the *name* of a token says who acted; it is no secret
_SECRET_VALUE = re.compile(
    r"sjt_[0-9a-f]+_[A-Za-z0-9_-]+"
    r"|(?i:bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
)


@functools.lru_cache(maxsize=4096)  # keys repeat (a handful of audit/log field names): decide each once
def is_secret_key(key: str) -> bool:
    folded = key.lower().replace("_", "").replace("-", "").replace(" ", "")
    if folded in _SECRET_KEY_EXCEPTIONS:
        return False
    return any(part in folded for part in _SECRET_KEY_PARTS)


def mask(text: str) -> str:
    """`text` with every token-like substring replaced by `[redacted]`.

    Most texts (ids, paths, routes, addresses, names) can hold none of `_SECRET_VALUE`'s three shapes, and
    saying so takes three substring searches: each shape needs `sjt_`, `eyJ`, or whitespace after its
    scheme word, and every character `\\s` matches is either the ASCII space or one `str.isprintable` refuses
    (tests/store/test_audit.py checks every code point). That is a fifth of the regular expression's cost on
    the request log's path field, which is masked on every request."""
    if len(text) < 8:  # shorter than any pattern: the common case of ids, methods and routes costs nothing
        return text
    if "sjt_" not in text and "eyJ" not in text and " " not in text and text.isprintable():
        return text
    return _SECRET_VALUE.sub(REDACTED, text)


def scrub(value: Any) -> Any:
    """A JSON-able copy of `value` without secret-named keys (at any depth) and with token-like strings
    masked. Sets and tuples become lists; other objects (datetimes, UUIDs) become their scrubbed text."""
    if isinstance(value, str):  # a concrete type: a flag test, unlike the ABC checks below
        return mask(value)
    kind = type(value)  # the other JSON types by identity first: an ABC isinstance costs more than the work
    if value is None or kind is int or kind is bool or kind is float:
        return value
    if kind is dict or isinstance(value, Mapping):
        return {str(k): scrub(v) for k, v in value.items() if not is_secret_key(str(k))}
    if kind is list or isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, bool | int | float):
        return value
    return mask(str(value))
