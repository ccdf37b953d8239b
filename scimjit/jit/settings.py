"""Engine-wide knobs from the `[jit]` table; the model lives in scimjit.config (the one configuration model),
and these names stay importable from here."""

from __future__ import annotations

from scimjit.config import ConfigError, JitSettings, config_duration

__all__ = ["ConfigError", "JitSettings", "config_duration"]
