"""The one configuration model: environment variables (`SCIMJIT_*`) over a TOML file (`SCIMJIT_CONFIG`) over
defaults, validated key by key.

Every section the code reads has a typed model here: `[server]` (ServerConfig, the fields of Settings),
`[jit]` (JitConfig: the engine's knobs, JitSettings, plus time-bound access and `[[jit.policies]]`) and
`[[applications]]` (ApplicationConfig) and `[[authorization_servers]]` (AuthorizationServerConfig, whose
access tokens SCIM clients may present). The models are strict (a TOML `"10"` is not an integer, `"false"` is
not a boolean) and forbid unknown keys, so a typo stops startup with one line naming the file, the key and
what was expected (ConfigError) instead of being ignored. Environment variables are strings: they are parsed
per type here (booleans: 1/true/yes/on or 0/false/no/off, nothing else) and then validated the same way.

Layout: values.py (ConfigError, the one Duration, names, URLs), server.py, jit.py and applications.py (one
model per section), messages.py (the one-line errors), and here the document, Settings and the environment.

pydantic v2 does the checking because it reports every problem with its location inside the nested tables
(`applications.0.match.claim`), which is what the one-line message is built from.

Every setting is documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BeforeValidator, Field, ValidationError, field_validator

from scimjit.config.applications import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_SCOPES,
    MATCH_ATTRIBUTES,
    ApplicationConfig,
    ConnectorTable,
    MatchConfig,
    SamlConfig,
)
from scimjit.config.authservers import AuthorizationServerConfig
from scimjit.config.console import ConsoleConfig
from scimjit.config.jit import AutoApprove, JitConfig, JitSettings, Policy
from scimjit.config.messages import describe_error, message
from scimjit.config.notifications import EmailConfig, NotificationsConfig
from scimjit.config.server import DEFAULT_DATABASE_URL, ServerConfig
from scimjit.config.values import (
    MAX_DURATION,
    ConfigError,
    Duration,
    Names,
    StrictModel,
    Strings,
    check_url,
    config_duration,
    is_loopback_host,
    parse_duration,
    show,
)

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_SCOPES",
    "MATCH_ATTRIBUTES",
    "MAX_DURATION",
    "ApplicationConfig",
    "AuthorizationServerConfig",
    "AutoApprove",
    "ConfigError",
    "ConfigFile",
    "ConnectorTable",
    "ConsoleConfig",
    "Duration",
    "EmailConfig",
    "JitConfig",
    "JitSettings",
    "MatchConfig",
    "Names",
    "NotificationsConfig",
    "Policy",
    "SamlConfig",
    "ServerConfig",
    "Settings",
    "Strings",
    "check_url",
    "config_duration",
    "describe_error",
    "is_loopback_host",
    "parse_duration",
    "validate_document",
]


class ConfigFile(StrictModel):
    """The whole TOML document: nothing else is read, so any other top-level key is a mistake."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    jit: JitConfig = Field(default_factory=JitConfig)
    applications: tuple[ApplicationConfig, ...] = ()
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    console: ConsoleConfig | None = None  # [console]: the web console; absent, it is off
    authorization_servers: tuple[AuthorizationServerConfig, ...] = ()

    @field_validator("applications", "authorization_servers", mode="before")
    @classmethod
    def _applications(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("applications")
    @classmethod
    def _unique(cls, value: tuple[ApplicationConfig, ...]) -> tuple[ApplicationConfig, ...]:
        seen: set[str] = set()
        for app in value:
            if app.name in seen:
                raise ValueError(f"application {app.name!r}: the name is used twice")
            if app.name.startswith("notify:"):  # the built-in notifiers' outbox names (delivery/notifiers.py)
                raise ValueError(f"application {app.name!r}: names starting with notify: are reserved")
            seen.add(app.name)
        return value

    @field_validator("authorization_servers")
    @classmethod
    def _one_per_issuer(
        cls, value: tuple[AuthorizationServerConfig, ...]
    ) -> tuple[AuthorizationServerConfig, ...]:
        issuers = [server.issuer for server in value]
        for issuer in issuers:
            if issuers.count(issuer) > 1:
                raise ValueError(f"authorization server {issuer!r}: the issuer is listed twice")
        return value


def validate_document(document: Mapping[str, Any], source: str = "") -> ConfigFile:
    """The parsed TOML document, checked; ConfigError with one line (`source` first) on the first problem."""
    try:
        return ConfigFile.model_validate(dict(document))
    except ValidationError as exc:
        raise ConfigError(message(exc, document, source, ConfigFile)) from None


class Settings(ServerConfig):
    """The effective settings of a process: `[server]` keys (file, then environment, then keyword
    overrides) plus the validated `[jit]` and `[[applications]]` sections. Attributes may be reassigned
    (tests do), as with the dataclass this replaced."""

    jit: JitConfig = Field(default_factory=JitConfig)
    applications: tuple[ApplicationConfig, ...] = ()
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    console: ConsoleConfig | None = None
    authorization_servers: tuple[AuthorizationServerConfig, ...] = ()

    @classmethod
    def load(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        document: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read `SCIMJIT_CONFIG` (or take an already parsed `document`) and the `SCIMJIT_*` variables of
        `environ` (default: os.environ). Raises ConfigError, one line, on the first wrong key or value."""
        env = os.environ if environ is None else environ
        source = ""
        if document is None:
            document = {}
            source = env.get("SCIMJIT_CONFIG", "")
            if source:
                document = _read_toml(source)
        file = validate_document(document, source)
        values: dict[str, Any] = file.server.model_dump(exclude_unset=True)
        if file.jit.sweep_interval is not None:
            values["sweep_interval"] = file.jit.sweep_interval
        origin: dict[str, str] = {}
        for name, info in ServerConfig.model_fields.items():
            var = f"SCIMJIT_{name.upper()}"
            if var in env:
                try:
                    values[name] = _from_env(env[var], info.annotation, info.metadata)
                except ValueError as exc:
                    raise ConfigError(f"{var}: {exc}") from None
                origin[name] = var
        values.update(overrides)
        try:
            return cls.model_validate(
                {
                    **values,
                    "jit": file.jit,
                    "applications": file.applications,
                    "notifications": file.notifications,
                    "console": file.console,
                    "authorization_servers": file.authorization_servers,
                }
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            key = str(first["loc"][0]) if first["loc"] else ""
            where = origin.get(key) or (f"{source}: [server] {key}" if source else f"[server] {key}")
            raise ConfigError(f"{where}: {describe_error(first)}") from None


def _read_toml(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the file named by SCIMJIT_CONFIG: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# --- environment variables --------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(text: str, annotation: Any, metadata: list[Any]) -> Any:
    """One `SCIMJIT_*` value (a string) as its setting's type; ValueError says what was expected."""
    if any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in metadata):
        return parse_duration(text)
    if annotation is bool:
        word = text.strip().lower()
        if word in _TRUE | _FALSE:
            return word in _TRUE
        raise ValueError(f"expected one of 1, true, yes, on, 0, false, no, off, got {show(text)}")
    if annotation is int:
        try:
            return int(text.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {show(text)}") from None
    if annotation is float:
        try:
            number = float(text.strip())
        except ValueError:
            raise ValueError(f"expected a number, got {show(text)}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {show(text)}")
        return number
    if annotation is str:
        return text
    return [Path(p) for p in text.split(os.pathsep) if p]  # schemas_dirs
