"""Just-in-time access configuration: TTL defaults, expiry notices and the per-group request policies.

Everything here comes from the `[jit]` table of the config file (shared with settings.py, which ignores these
keys, as this module ignores its keys):

    [jit]
    sweep_interval = "2s"              # read by scimjit.config
    sweep_batch_size = 1000
    expiry_notice = "15m"              # access.expiring goes out this long before a grant ends; "0s": never
    notify_applications = ["chatbot"]  # also send every access.expiring to these applications
    membership_ttl = { "contractors" = "30d" }   # default TTL of SCIM memberships, per group

    [[jit.policies]]
    group = "prod-admins"              # displayName or id of the group that can be requested
    eligible = ["engineers"]           # who may ask: members of any of these (absent: any active user)
    max_duration = "8h"
    approvers = ["sre-leads"]          # who may decide (never on their own request)
    approvals_required = 1
    auto_approve = { max_duration = "1h", eligible = ["oncall"] }
    pending_ttl = "24h"                # an undecided request lapses after this

Group references are matched like the application registry matches them: a group's id exactly, or its
displayName case-insensitively. Validation happens once, at load, with messages that say where.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scimjit.jit.settings import ConfigError, config_duration

DEFAULT_PENDING_TTL = 86_400.0
DEFAULT_BATCH_SIZE = 1000

_POLICY_KEYS = {
    "group",
    "eligible",
    "max_duration",
    "approvers",
    "approvals_required",
    "auto_approve",
    "pending_ttl",
    "description",
}
_AUTO_KEYS = {"max_duration", "eligible"}


def ref_matches(ref: str, group_id: str, display_name: str) -> bool:
    """Whether a configured group reference names this group (id exactly, displayName in any case)."""
    return ref == group_id or ref.lower() == display_name.lower()


def refs_match(refs: Iterable[str], group_id: str, display_name: str) -> bool:
    return any(ref_matches(r, group_id, display_name) for r in refs)


@dataclass(frozen=True, slots=True)
class AutoApprove:
    max_duration: float  # requests up to this long are approved at once...
    eligible: tuple[str, ...] = ()  # ...when the requester is in one of these groups (empty: any eligible)


@dataclass(frozen=True, slots=True)
class Policy:
    group: str
    eligible: tuple[str, ...]
    max_duration: float
    approvers: tuple[str, ...]
    approvals_required: int
    auto_approve: AutoApprove | None
    pending_ttl: float
    description: str = ""

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
        }


@dataclass(frozen=True, slots=True)
class AccessSettings:
    sweep_batch_size: int = DEFAULT_BATCH_SIZE
    expiry_notice: float = 900.0
    notify_applications: tuple[str, ...] = ()
    membership_ttl: Mapping[str, int] = field(default_factory=dict)  # group ref -> seconds
    policies: tuple[Policy, ...] = ()

    def policy_for(self, group_id: str, display_name: str) -> Policy | None:
        for policy in self.policies:
            if ref_matches(policy.group, group_id, display_name):
                return policy
        return None

    def ttl_for(self, group_id: str, display_name: str) -> int | None:
        """The configured default membership TTL of a group, in seconds."""
        for ref, seconds in self.membership_ttl.items():
            if ref_matches(ref, group_id, display_name):
                return seconds
        return None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any], applications: Iterable[str] = ()) -> AccessSettings:
        """Parse the `[jit]` table; `applications` (the configured names) checks `notify_applications`."""
        section = raw.get("jit", {})
        if not isinstance(section, Mapping):
            raise ConfigError("[jit] must be a table")
        batch = section.get("sweep_batch_size", DEFAULT_BATCH_SIZE)
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 100_000:
            raise ConfigError("[jit] sweep_batch_size must be an integer between 1 and 100000")
        notice = config_duration(section, "expiry_notice", "[jit]", 900.0)
        notify = _strings(section, "notify_applications", "[jit]")
        known = set(applications)
        unknown = [n for n in notify if known and n not in known]
        if unknown:
            raise ConfigError(f"[jit] notify_applications: no application named {', '.join(unknown)}")
        ttl_raw = section.get("membership_ttl", {})
        if not isinstance(ttl_raw, Mapping):
            raise ConfigError('[jit] membership_ttl must be a table: membership_ttl = { "group" = "30d" }')
        ttls: dict[str, int] = {}
        for ref in ttl_raw:
            seconds = config_duration(ttl_raw, ref, "[jit] membership_ttl", None)
            if not seconds or seconds < 1:
                raise ConfigError(f"[jit] membership_ttl.{ref} must be at least 1s")
            ttls[str(ref)] = int(seconds)
        tables = section.get("policies", [])
        if not isinstance(tables, list):
            raise ConfigError("[jit] policies must be an array of tables: write [[jit.policies]]")
        policies = [_policy(t, i) for i, t in enumerate(tables)]
        seen: set[str] = set()
        for p in policies:
            if p.group.lower() in seen:
                raise ConfigError(f"[[jit.policies]] group {p.group!r} has two policies")
            seen.add(p.group.lower())
        return cls(
            sweep_batch_size=batch,
            expiry_notice=notice,
            notify_applications=tuple(notify),
            membership_ttl=ttls,
            policies=tuple(policies),
        )


def _policy(t: Any, index: int) -> Policy:
    where = f"[[jit.policies]] #{index + 1}"
    if not isinstance(t, Mapping):
        raise ConfigError(f"{where} must be a table")
    group = t.get("group")
    if not isinstance(group, str) or not group.strip():
        raise ConfigError(f"{where}: `group` (the displayName or id of the requestable group) is required")
    where = f"[[jit.policies]] group {group!r}"
    unknown = set(t) - _POLICY_KEYS
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_POLICY_KEYS))}"
        )
    max_duration = config_duration(t, "max_duration", where, None)
    if not max_duration or max_duration < 1:
        raise ConfigError(f'{where}: max_duration is required (e.g. max_duration = "8h")')
    approvals = t.get("approvals_required", 1)
    if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 1:
        raise ConfigError(f"{where}: approvals_required must be a positive integer")
    auto: AutoApprove | None = None
    auto_raw = t.get("auto_approve")
    if auto_raw is not None:
        if not isinstance(auto_raw, Mapping) or set(auto_raw) - _AUTO_KEYS or "max_duration" not in auto_raw:
            raise ConfigError(
                f'{where}: write auto_approve = {{ max_duration = "1h", eligible = ["oncall"] }}'
            )
        auto_max = config_duration(auto_raw, "max_duration", f"{where}: auto_approve", None)
        if auto_max is None or auto_max > max_duration:
            raise ConfigError(f"{where}: auto_approve.max_duration must not exceed max_duration")
        auto = AutoApprove(auto_max, tuple(_strings(auto_raw, "eligible", f"{where}: auto_approve")))
    approvers = tuple(_strings(t, "approvers", where))
    if not approvers and auto is None:
        raise ConfigError(f"{where}: name the approvers group(s), or auto_approve, or both")
    pending = config_duration(t, "pending_ttl", where, DEFAULT_PENDING_TTL)
    if pending < 1:
        raise ConfigError(f"{where}: pending_ttl must be at least 1s")
    return Policy(
        group=group.strip(),
        eligible=tuple(_strings(t, "eligible", where)),
        max_duration=max_duration,
        approvers=approvers,
        approvals_required=approvals,
        auto_approve=auto,
        pending_ttl=pending,
        description=str(t.get("description", "")),
    )


def _strings(t: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = t.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: `{key}` must be a list of group names or ids")
    return list(value)
