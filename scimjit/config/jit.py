"""The `[jit]` table and its `[[jit.policies]]`: the engine's knobs (JitSettings), the sweeper's and
time-bound access's keys, and the request policies (Policy, AutoApprove) the access code uses as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from scimjit.config.conditions import Conditions, Window
from scimjit.config.values import Duration, Names, StrictModel, as_tuple


class JitSettings(StrictModel):
    """The JIT engine's login and outbox knobs (the part of `[jit]` the engine itself reads)."""

    clock_skew: Duration = 60.0  # seconds of leeway for exp / nbf / iat
    jwks_min_refresh: Duration = 30.0  # floor between two JWKS fetches of one issuer (unknown-kid storms)
    jwks_max_age: Duration = 3600.0  # refetch keys this old even if every kid is known (rotation)
    issuer_retry_after: Duration = 30.0  # after a failed discovery/JWKS fetch, ask the issuer again then
    max_token_age: Duration = 14_400.0  # refuse ID tokens issued longer ago, or valid for longer (exp - iat)
    http_timeout: Duration = 10.0  # connect+read timeout for discovery, JWKS and connector calls
    outbox_max_attempts: int = Field(default=12, ge=1)  # then the event is `dead`
    outbox_backoff_base: Duration = 2.0  # first retry after ~this, doubling each attempt
    outbox_backoff_max: Duration = 3600.0
    outbox_lease: Duration = 60.0  # a claimed event is another worker's again after this (crashed worker)
    worker_poll_interval: Duration = 1.0
    worker_batch_size: int = Field(default=32, ge=1)
    last_login_resolution: Duration = 60.0  # write last_login_at at most this often per account
    login_wait: Duration = 5.0  # a concurrent first login waits this long for the other one's account

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> JitSettings:
        """The `[jit]` table of a parsed config document (validated whole: unknown keys are errors)."""
        from scimjit.config import validate_document

        return validate_document({"jit": raw.get("jit", {})}).jit


class AutoApprove(StrictModel):
    max_duration: Duration  # requests up to this long are approved at once...
    eligible: Names = ()  # ...when the requester is in one of these groups (empty: any eligible)

    @field_validator("eligible")
    @classmethod
    def _refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected group names or ids, not empty strings")
        return value


class Policy(StrictModel):
    """One `[[jit.policies]]` table: a requestable group."""

    group: str
    eligible: Names = ()
    max_duration: Duration
    approvers: Names = ()
    approvals_required: int = Field(default=1, ge=1)
    auto_approve: AutoApprove | None = None
    pending_ttl: Duration = 86_400.0
    description: str = ""
    # checked when a request is filed (scimjit/entitlement/conditions.py); outside them the request is
    # refused (403 condition_not_met) or, with outside = "approval", waits for the approvers
    conditions: Conditions | None = None
    outside: Literal["refuse", "approval"] = "refuse"
    # grant windows, copied onto each grant of this group: outside them the grant gives no membership
    windows: tuple[Window, ...] = ()

    @field_validator("windows", mode="before")
    @classmethod
    def _windows(cls, value: Any) -> Any:
        return as_tuple(value)

    @field_validator("group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected the displayName or id of the requestable group")
        return value.strip()

    @field_validator("eligible", "approvers")
    @classmethod
    def _refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(value):
            raise ValueError("expected group names or ids, not empty strings")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Policy:
        if self.max_duration < 1:
            raise ValueError('max_duration must be at least 1s (e.g. max_duration = "8h")')
        if self.auto_approve and self.auto_approve.max_duration > self.max_duration:
            raise ValueError("auto_approve.max_duration must not exceed max_duration")
        if not self.approvers and self.auto_approve is None:
            raise ValueError("name the approvers group(s), or auto_approve, or both")
        if self.pending_ttl < 1:
            raise ValueError("pending_ttl must be at least 1s")
        if self.outside == "approval" and not self.approvers:
            raise ValueError('outside = "approval" needs `approvers` to route the request to')
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "eligible": list(self.eligible),
            "maxDuration": self.max_duration,
            "approvers": list(self.approvers),
            "approvalsRequired": self.approvals_required,
            "autoApprove": (
                {"maxDuration": self.auto_approve.max_duration, "eligible": list(self.auto_approve.eligible)}
                if self.auto_approve
                else None
            ),
            "pendingTTL": self.pending_ttl,
            "description": self.description,
            "conditions": self.conditions.summary() if self.conditions else None,
            "outside": self.outside,
            "windows": [w.summary() for w in self.windows],
        }


class JitConfig(JitSettings):
    """The whole `[jit]` table: the engine's knobs, the sweeper's, time-bound access and its policies."""

    sweep_interval: Duration | None = None  # None: the server setting (SCIMJIT_SWEEP_INTERVAL, default 2s)
    sweep_batch_size: int = Field(default=1000, ge=1, le=100_000)
    expiry_notice: Duration = 900.0  # access.expiring this long before a grant ends; 0: never
    notify_applications: Names = ()  # (a lone string was always accepted here)
    membership_ttl: dict[str, Duration] = Field(default_factory=dict)  # group ref -> seconds
    reconcile_interval: Duration = 3600.0  # scheduled reconcile pass with each connector; 0: none
    policies: tuple[Policy, ...] = ()
    # PUT /jit/v1/schedules/{source} (access/schedules.py): shifts per plan, and the longest shift accepted
    schedule_max_shifts: int = Field(default=5000, ge=1, le=100_000)
    schedule_max_shift: Duration = 86_400.0

    @field_validator("policies", mode="before")
    @classmethod
    def _policies(cls, value: Any) -> Any:
        return as_tuple(value)

    @field_validator("membership_ttl")
    @classmethod
    def _ttls(cls, value: dict[str, float]) -> dict[str, float]:
        for ref, seconds in value.items():
            if seconds < 1:
                raise ValueError(f"membership_ttl.{ref} must be at least 1s")
        return value

    @field_validator("policies")
    @classmethod
    def _one_policy_per_group(cls, value: tuple[Policy, ...]) -> tuple[Policy, ...]:
        seen: set[str] = set()
        for p in value:
            if p.group.lower() in seen:
                raise ValueError(f"group {p.group!r} has two policies")
            seen.add(p.group.lower())
        return value
