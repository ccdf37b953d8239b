"""The `[server]` table: the HTTP server's settings, each also read from `SCIMJIT_<KEY>` (see __init__)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from scimjit.config.values import Duration, Paths

DEFAULT_DATABASE_URL = "sqlite:///./scimjit.db"


class ServerConfig(BaseModel):
    """The `[server]` table; each key also reads `SCIMJIT_<KEY>` from the environment."""

    model_config = ConfigDict(strict=True, extra="forbid")

    database_url: str = DEFAULT_DATABASE_URL
    base_url: str = ""  # public URL of the server, for meta.location; empty: derived from each request
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    max_filter_length: int = Field(default=4096, ge=1)
    max_filter_depth: int = Field(default=32, ge=1)
    # comparisons in one filter (each `attr op value`, `pr` included); bounds the SQL one filter can ask for
    filter_max_terms: int = Field(default=50, ge=1)
    # the longest any one SQL statement may run; over it 400 tooMany, the transaction rolled back; 0: no limit
    statement_timeout: Duration = 5.0
    max_page_size: int = Field(default=1000, ge=1)
    default_page_size: int = Field(default=100, ge=1)
    max_bulk_operations: int = Field(default=1000, ge=0)
    max_bulk_payload_bytes: int = Field(default=1024 * 1024, ge=0)
    anonymous_discovery: bool = False
    token_cache_seconds: float = Field(default=5.0, ge=0, allow_inf_nan=False)
    schemas_dirs: Paths = Field(default_factory=list)
    run_worker: bool = True
    run_sweeper: bool = True
    sweep_interval: Duration = 2.0  # documented under [jit]; [jit] sweep_interval wins over this
    audit_retention: Duration = 365 * 86400.0  # 0 keeps audit records forever
    # Per token and per process; 0 disables. High on purpose: IdPs do not throttle themselves (see docs).
    rate_limit_per_second: float = Field(default=1000.0, ge=0, allow_inf_nan=False)
    rate_limit_burst: int = Field(default=2000, ge=0)
    # Per client address, before authentication (floods of bogus tokens); 0 disables.
    client_rate_limit_per_second: float = Field(default=20.0, ge=0, allow_inf_nan=False)
    client_rate_limit_burst: int = Field(default=200, ge=0)
    # a plain Group PATCH answers 200 with the group up to this many members, else 204 (docs/scim.md)
    group_patch_response_max_members: int = Field(default=100, ge=0)
    # most operations in one PATCH (`tooMany` over it); advertised in /ServiceProviderConfig (docs/scim.md)
    patch_max_operations: int = Field(default=1000, ge=1)
    strict_attributes: bool = False  # unknown attributes / schema URNs in writes: 400 instead of ignored
    # /metrics asks for a token with the `metrics` (or admin) scope; false opens it (application names, traffic)
    metrics_token_required: bool = True
    request_log: bool = True  # one JSON log line per HTTP request
    log_level: str = "info"
    # HMAC key of the OIDC sign-in cookie (/jit/v1/apps/{name}/login); empty: a random key per process
    session_secret: str = Field(default="", repr=False)
