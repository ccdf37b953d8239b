"""What a SCIM write ignored: unknown attributes, sub-attributes and schema URNs, never silently.

Unknown input is ignored rather than refused (see `scim.resource`): IdPs send whatever their admins map, and
one unmapped attribute must not block an `active: false`. But ignoring silently hides data loss, so every write
collects what it ignored in an `Ignored`; the store puts the names in the write's audit record (`ignored`) and
counts them in `scimjit_scim_ignored_attributes_total`. With the `strict_attributes` setting each one is a 400
instead: `invalidPath` for a PATCH `path`, `invalidValue` for a name inside a body or value and for a schema URN.

Only names are kept, never values; the list is capped (`MAX_NAMES`, each name `MAX_NAME_LENGTH` characters)
so a hostile body cannot bloat an audit row; `count` stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scimjit.scim.errors import invalid_path, invalid_value

MAX_NAMES = 100
MAX_NAME_LENGTH = 200
_STRICT = "strict_attributes is on, so unknown names are refused"


@dataclass(slots=True)
class Ignored:
    """The names one write ignored, in the order met, each once. `strict` turns the first into an error."""

    strict: bool = False
    names: list[str] = field(default_factory=list)
    count: int = 0
    _seen: set[str] = field(default_factory=set)

    def attribute(self, name: str, why: str = "unknown attribute") -> None:
        """An attribute or sub-attribute name inside a body or a PATCH value."""
        if self.strict:
            raise invalid_value(f"{name}: {why} ({_STRICT})")
        self._note(name)

    def path(self, path: str, where: str, why: str = "names no attribute") -> None:
        """A PATCH `path`."""
        if self.strict:
            raise invalid_path(f"{where}: {path!r} {why} ({_STRICT})")
        self._note(path)

    def schema(self, urn: str, rt_name: str) -> None:
        """A URN in `schemas` that the resource type does not have (Entra's ADSCIM Group URN)."""
        if self.strict:
            raise invalid_value(f"schemas: {urn!r} is not a schema of {rt_name} ({_STRICT})")
        self._note(urn)

    def _note(self, name: str) -> None:
        name = name[:MAX_NAME_LENGTH]
        if name in self._seen:
            return
        self._seen.add(name)
        self.count += 1
        if len(self.names) < MAX_NAMES:
            self.names.append(name)
