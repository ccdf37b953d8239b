"""Engine-wide knobs from the `[jit]` table of the config file (per-application settings live in apps.py).

The `[jit]` table is shared with other parts of scimjit (the sweeper reads `sweep_interval`), so unknown keys
are left alone here rather than rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from scimjit.config import parse_duration


class ConfigError(ValueError):
    """The configuration file is wrong; the message says where and how to fix it."""


def config_duration(t: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
    """A non-negative duration setting (`"90s"`, `"8h"`, a number of seconds) from a TOML table, or `default`."""
    if key not in t:
        return default
    try:
        value = parse_duration(t[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None
    if value < 0:
        raise ConfigError(f"{where}: {key} must not be negative")
    return value


@dataclass(frozen=True, slots=True)
class JitSettings:
    clock_skew: float = 60.0  # seconds of leeway for exp / nbf / iat
    jwks_min_refresh: float = 30.0  # floor between two JWKS fetches of one issuer (unknown-kid storms)
    jwks_max_age: float = 3600.0  # refetch keys this old even if every kid is known (rotation)
    http_timeout: float = 10.0  # connect+read timeout for discovery, JWKS and connector calls
    outbox_max_attempts: int = 12  # then the event is `dead`
    outbox_backoff_base: float = 2.0  # first retry after ~this, doubling each attempt
    outbox_backoff_max: float = 3600.0
    outbox_lease: float = 60.0  # a claimed event is another worker's again after this (crashed worker)
    worker_poll_interval: float = 1.0
    worker_batch_size: int = 32
    last_login_resolution: float = 60.0  # write last_login_at at most this often per account
    login_wait: float = 5.0  # a concurrent first login waits this long for the other one's account
    reconcile_interval: float = (
        3600.0  # the periodic drift repair (jit/reconcile.py) runs this often; 0: never
    )

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> JitSettings:
        section = raw.get("jit", {})
        if not isinstance(section, Mapping):
            raise ConfigError("[jit] must be a table")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in section:
                continue
            value = section[f.name]
            try:
                values[f.name] = int(value) if f.type == "int" else parse_duration(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"[jit] {f.name}: {exc}") from None
            if values[f.name] < 0:
                raise ConfigError(f"[jit] {f.name} must not be negative")
        return cls(**values)
