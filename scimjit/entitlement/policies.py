"""Just-in-time access configuration: TTL defaults, expiry notices and the per-group request policies.

Everything here comes from the `[jit]` table of the config file, checked by the one model of scimjit.config
(JitConfig, Policy); this module holds the runtime view and the group matching:

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
displayName case-insensitively. Validation happens once, at load (Settings.load), with one line that says
where.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from scimjit.config import AutoApprove, ConfigError, JitConfig, NotificationsConfig, Policy, validate_document

__all__ = ["AccessSettings", "AutoApprove", "ConfigError", "Policy", "ref_matches", "refs_match"]

DEFAULT_PENDING_TTL = Policy.model_fields["pending_ttl"].default
DEFAULT_BATCH_SIZE = JitConfig.model_fields["sweep_batch_size"].default


def ref_matches(ref: str, group_id: str, display_name: str) -> bool:
    """Whether a configured group reference names this group (id exactly, displayName in any case)."""
    return ref == group_id or ref.lower() == display_name.lower()


def refs_match(refs: Iterable[str], group_id: str, display_name: str) -> bool:
    return any(ref_matches(r, group_id, display_name) for r in refs)


@dataclass(frozen=True, slots=True)
class AccessSettings:
    sweep_batch_size: int = DEFAULT_BATCH_SIZE
    expiry_notice: float = JitConfig.model_fields["expiry_notice"].default
    notify_applications: tuple[str, ...] = ()
    membership_ttl: Mapping[str, int] = field(default_factory=dict)  # group ref -> seconds
    policies: tuple[Policy, ...] = ()
    # who is told of requests, decisions and expiries, and how (scimjit/access/notify.py)
    notifications: NotificationsConfig = field(default_factory=NotificationsConfig)
    base_url: str = ""  # [server] base_url, for the console links in notifications
    schedule_max_shifts: int = JitConfig.model_fields["schedule_max_shifts"].default
    schedule_max_shift: float = JitConfig.model_fields["schedule_max_shift"].default

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
        """The `[jit]` table of a parsed config document; `applications` (the configured names) checks
        `notify_applications`."""
        return cls.from_config(validate_document({"jit": raw.get("jit", {})}).jit, applications)

    @classmethod
    def from_config(
        cls,
        jit: JitConfig,
        applications: Iterable[str] = (),
        notifications: NotificationsConfig | None = None,
        base_url: str = "",
    ) -> AccessSettings:
        known = set(applications)
        unknown = [n for n in jit.notify_applications if known and n not in known]
        if unknown:
            raise ConfigError(f"[jit] notify_applications: no application named {', '.join(unknown)}")
        notifications = notifications or NotificationsConfig()
        unknown = [n for n in notifications.applications if n not in known]
        if unknown:
            raise ConfigError(f"[notifications] applications: no application named {', '.join(unknown)}")
        return cls(
            sweep_batch_size=jit.sweep_batch_size,
            expiry_notice=jit.expiry_notice,
            notify_applications=jit.notify_applications,
            membership_ttl={ref: int(seconds) for ref, seconds in jit.membership_ttl.items()},
            policies=jit.policies,
            notifications=notifications,
            base_url=base_url,
            schedule_max_shifts=jit.schedule_max_shifts,
            schedule_max_shift=jit.schedule_max_shift,
        )
