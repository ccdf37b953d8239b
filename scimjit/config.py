"""Settings: environment variables (`SCIMJIT_*`) over an optional TOML file (`SCIMJIT_CONFIG`) over defaults.

Every setting is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATABASE_URL = "sqlite:///./scimjit.db"


def parse_duration(value: str | int | float) -> float:
    """`"90s"`, `"15m"`, `"8h"`, `"7d"`, `"1w"` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip().lower()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 15m, 8h, 7d") from None


@dataclass
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    base_url: str = ""  # public URL of the server, for meta.location; empty: derived from each request
    max_body_bytes: int = 1024 * 1024
    max_filter_length: int = 4096
    max_filter_depth: int = 32
    max_page_size: int = 1000
    default_page_size: int = 100
    max_bulk_operations: int = 1000
    max_bulk_payload_bytes: int = 1024 * 1024
    anonymous_discovery: bool = False
    token_cache_seconds: float = 5.0
    schemas_dirs: list[Path] = field(default_factory=list)
    run_worker: bool = True
    run_sweeper: bool = True
    sweep_interval: float = 2.0
    audit_retention: float = 365 * 86400.0  # seconds ("90d" in TOML/env); 0 keeps audit records forever
    rate_limit_per_second: float = 1000.0  # per token and per process; 0 disables the limit
    rate_limit_burst: int = 2000
    # per client address and per process, charged by requests that fail authentication or need none
    client_rate_limit_per_second: float = 20.0  # 0 disables the limit
    client_rate_limit_burst: int = 200
    group_patch_response_max_members: int = 100  # larger groups answer a plain PATCH with 204
    metrics_token_required: bool = False  # /metrics asks for a token with the `metrics` (or admin) scope
    request_log: bool = True  # one JSON log line per HTTP request
    log_level: str = "info"
    # HMAC key of the OIDC sign-in cookie (/jit/v1/apps/{name}/login); empty: a random key per process
    session_secret: str = field(default="", repr=False)
    raw: dict[str, Any] = field(default_factory=dict)  # the parsed TOML file, for the JIT engine's sections

    @classmethod
    def load(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if environ is None else environ)
        raw: dict[str, Any] = {}
        config_path = env.get("SCIMJIT_CONFIG")
        if config_path:
            raw = tomllib.loads(Path(config_path).read_text())
        server = raw.get("server", {})
        jit = raw.get("jit", {})
        settings = cls(raw=raw)
        for key, value in server.items():
            if hasattr(settings, key):
                setattr(settings, key, value)
        if "sweep_interval" in jit:
            settings.sweep_interval = parse_duration(jit["sweep_interval"])
        for name, typ in _ENV_SETTINGS.items():
            value = env.get(f"SCIMJIT_{name.upper()}")
            if value is not None:
                setattr(settings, name, typ(value))
        for key, value in overrides.items():
            setattr(settings, key, value)
        settings.schemas_dirs = [Path(p) for p in settings.schemas_dirs]
        settings.audit_retention = parse_duration(settings.audit_retention)
        return settings


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _paths(value: str) -> list[Path]:
    return [Path(p) for p in value.split(os.pathsep) if p]


_ENV_SETTINGS: dict[str, Any] = {
    "database_url": str,
    "base_url": str,
    "max_body_bytes": int,
    "max_filter_length": int,
    "max_filter_depth": int,
    "max_page_size": int,
    "default_page_size": int,
    "max_bulk_operations": int,
    "max_bulk_payload_bytes": int,
    "anonymous_discovery": _bool,
    "token_cache_seconds": float,
    "schemas_dirs": _paths,
    "run_worker": _bool,
    "run_sweeper": _bool,
    "sweep_interval": parse_duration,
    "audit_retention": parse_duration,
    "rate_limit_per_second": float,
    "rate_limit_burst": int,
    "client_rate_limit_per_second": float,
    "client_rate_limit_burst": int,
    "group_patch_response_max_members": int,
    "metrics_token_required": _bool,
    "request_log": _bool,
    "log_level": str,
    "session_secret": str,
}
