"""What the store tells the layers above about resource changes, inside the writing transaction.

The JIT engine implements `ChangeListener` to write outbox events (deprovisioning, role revokes) in the same
transaction as the SCIM change (transactional outbox); the store itself knows nothing about applications.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa


class ChangeListener(Protocol):
    def user_changed(self, conn: sa.Connection, before: Any, after: Any) -> None:
        """A user row changed (PUT/PATCH); `before`/`after` are full `users` rows."""

    def user_deleted(self, conn: sa.Connection, before: Any) -> None:
        """A user row is about to be deleted (its memberships still exist)."""

    def members_changed(
        self, conn: sa.Connection, group: Any, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        """Effective members added to / removed from a group (member ids), after the change."""

    def group_deleted(self, conn: sa.Connection, group: Any) -> None:
        """A group row is about to be deleted (its memberships still exist)."""

    def group_renamed(self, conn: sa.Connection, before: Any, after: Any) -> None:
        """A group's displayName changed: entitlements and roles named by displayName may have moved."""

    def decides_access(self, group: Any) -> bool:
        """Whether membership of `group` (a `groups` row) decides anyone's access: its writers then take the
        affected users' row locks before changing memberships (`store.users.lock`)."""

    def membership_ttl(self, group: Any) -> int | None:
        """Seconds that memberships added to `group` live when the group carries no `membershipTTL` of its
        own (the JIT configuration's default for it); None: they do not expire."""


class NoListener:
    """Used when no JIT engine is configured."""

    def user_changed(self, conn: sa.Connection, before: Any, after: Any) -> None:
        return None

    def user_deleted(self, conn: sa.Connection, before: Any) -> None:
        return None

    def members_changed(
        self, conn: sa.Connection, group: Any, added: Sequence[str], removed: Sequence[str]
    ) -> None:
        return None

    def group_deleted(self, conn: sa.Connection, group: Any) -> None:
        return None

    def group_renamed(self, conn: sa.Connection, before: Any, after: Any) -> None:
        return None

    def decides_access(self, group: Any) -> bool:
        return False

    def membership_ttl(self, group: Any) -> int | None:
        return None
