"""The value types every section shares: ConfigError, the one Duration, lists of names, paths, URLs.

A value type is an `Annotated` with a before-validator, so the strict models stay strict (no `"10"` for an
integer) while a TOML list still fills a tuple and `"8h"` still fills a duration.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict

MAX_DURATION = 100 * 365.25 * 86400  # 100 years: anything longer is a typo (and 1e300 s overflows datetimes)


class ConfigError(ValueError):
    """The configuration is wrong; the message is one line that says where (file or variable, key) and how."""


# --- durations --------------------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_HINT = 'a duration such as "90s", "15m", "8h", "7d", "1w", "500ms" or a number of seconds'


def parse_duration(value: Any) -> float:
    """`"90s"`, `"15m"`, `"8h"`, `"7d"`, `"1w"`, `"500ms"` or a number of seconds, as seconds.

    Range-checked (non-negative, finite, at most 100 years) so that every caller gets a clear ValueError
    instead of an OverflowError far away; the one duration parser of the project."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected {_DURATION_HINT}, got {show(value)}")
    seconds: float | None = None
    try:
        if isinstance(value, str):
            text = value.strip().lower()
            for suffix in sorted(_UNITS, key=len, reverse=True):
                number = text[: -len(suffix)].strip()
                if text.endswith(suffix) and number.replace(".", "", 1).isdigit():
                    seconds = float(number) * _UNITS[suffix]
                    break
            else:
                seconds = float(text)
        else:
            seconds = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"expected {_DURATION_HINT}, got {show(value)}") from None
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most 100 years, got {show(value)}")
    if seconds < 0:
        raise ValueError(f"expected a duration that is not negative, got {show(value)}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _names(value: Any) -> Any:
    """A TOML list as a tuple (strict tuple fields take tuples only); a lone string as a one-item tuple."""
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


def _paths(value: Any) -> Any:
    if isinstance(value, list | tuple) and all(isinstance(v, str | Path) for v in value):
        return [Path(v) for v in value]
    return value


def as_tuple(value: Any) -> Any:
    """A TOML list as a tuple: strict tuple fields take tuples only."""
    return tuple(value) if isinstance(value, list) else value


Names = Annotated[tuple[str, ...], BeforeValidator(_names)]  # a list, or one string for a one-item list
Strings = Annotated[tuple[str, ...], BeforeValidator(as_tuple)]  # a list only
Paths = Annotated[list[Path], BeforeValidator(_paths)]


def config_duration(t: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
    """A duration from a mapping (`default` when absent), as ConfigError naming `where` and `key`."""
    if key not in t:
        return default
    try:
        return parse_duration(t[key])
    except ValueError as exc:
        raise ConfigError(f"{where} {key}: {exc}") from None


# --- URLs -------------------------------------------------------------------------------------------------


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str) -> str:
    """HTTPS, or plain HTTP on a loopback host only (tests and local development)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url
    if parts.scheme == "http" and is_loopback_host(parts.hostname):
        return url
    raise ConfigError(
        f"{what} must be an https:// URL (plain http is allowed on 127.0.0.1, ::1, localhost only)"
    )


def https_url(url: str) -> str:
    try:
        return check_url(url, "the URL")
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


class StrictModel(BaseModel):
    """Strict types, unknown keys rejected, read-only: the base of every section's model."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def show(value: Any) -> str:
    """A value as it would be written in TOML (so the message quotes it the way the user typed it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return type(value).__name__
