"""Which SCIM attributes live in indexed columns, and how a document is spread into them.

The write path calls `user_columns` / `user_value_rows` / `group_columns`; the filter compiler and the sort
resolver read `USER_COLUMNS` / `GROUP_COLUMNS` to push predicates onto those indexed columns.
Lower-casing is Python's `str.lower` on both sides (SQLite's own lower() is ASCII-only; store.db registers
Python's as the SQL `lower` on SQLite so JSON-fallback comparisons agree), except `user_name_ci`: it holds the
PRECIS key of the userName (`scim.identifiers`, RFC 8265), so uniqueness and `userName eq` compare identifiers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import sqlalchemy as sa

from scimjit.scim.errors import invalid_value
from scimjit.scim.identifiers import DisallowedIdentifier, identifier_key
from scimjit.scim.schema import Registry, ResourceType
from scimjit.store.tables import groups, users


class Promoted(NamedTuple):
    column: sa.Column[Any]
    folded: bool  # holds the lower-cased value (compare with a lower-cased literal)
    identifier: bool = False  # holds `identifier_key` of the value (compare with the literal's key)


# canonical path (as AttrRef.full_path) -> column
USER_COLUMNS: dict[str, Promoted] = {
    "id": Promoted(users.c.id, False),
    "userName": Promoted(users.c.user_name_ci, True, identifier=True),
    "externalId": Promoted(users.c.external_id, False),
    "displayName": Promoted(users.c.display_name_ci, True),
    "name.familyName": Promoted(users.c.family_name_ci, True),
    "name.givenName": Promoted(users.c.given_name_ci, True),
    "active": Promoted(users.c.active, False),
    "meta.created": Promoted(users.c.created, False),
    "meta.lastModified": Promoted(users.c.last_modified, False),
}

GROUP_COLUMNS: dict[str, Promoted] = {
    "id": Promoted(groups.c.id, False),
    "displayName": Promoted(groups.c.display_name_ci, True),
    "externalId": Promoted(groups.c.external_id, False),
    "meta.created": Promoted(groups.c.created, False),
    "meta.lastModified": Promoted(groups.c.last_modified, False),
}


def fold(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def user_name_key(user_name: str) -> str:
    """The stored `user_name_ci` of a userName; 400 invalidValue naming the character PRECIS refuses."""
    try:
        return identifier_key(user_name)
    except DisallowedIdentifier as exc:
        raise invalid_value(f"userName {exc.detail}") from None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def user_columns(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Promoted column values for a normalised User document."""
    name = doc.get("name") or {}
    user_name = doc["userName"]
    return {
        "user_name": user_name,
        "user_name_ci": user_name_key(user_name),
        "external_id": _str_or_none(doc.get("externalId")),
        "display_name_ci": fold(_str_or_none(doc.get("displayName"))),
        "family_name_ci": fold(_str_or_none(name.get("familyName"))),
        "given_name_ci": fold(_str_or_none(name.get("givenName"))),
        "active": doc.get("active", True) is not False,
    }


def multi_valued_attributes(registry: Registry, rt: ResourceType) -> Iterator[tuple[str | None, str]]:
    """(extension URN or None, attribute name) of every multi-valued complex attribute, `groups` excepted."""
    for urn in rt.schema_ids:
        schema = registry.schema(urn)
        assert schema is not None
        for attr in schema.attributes.values():
            if attr.multi_valued and attr.type == "complex" and attr.name != "groups":
                yield (None if urn == rt.schema else urn), attr.name


def value_row_attr(urn: str | None, name: str) -> str:
    """The `user_values.attr` key: the attribute's canonical full path."""
    return f"{urn}:{name}" if urn else name


def user_value_rows(registry: Registry, rt: ResourceType, doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per element of each multi-valued complex attribute (without `user_pk`)."""
    rows: list[dict[str, Any]] = []
    for urn, name in multi_valued_attributes(registry, rt):
        container = doc.get(urn, {}) if urn else doc
        for position, element in enumerate(container.get(name) or ()):
            if not isinstance(element, Mapping):
                continue
            value = element.get("value")
            rows.append(
                {
                    "attr": value_row_attr(urn, name),
                    "position": position,
                    "type_ci": fold(element.get("type")),
                    "value": value if isinstance(value, str) else None,
                    "value_ci": fold(value)[:512] if isinstance(value, str) else None,
                    "is_primary": element.get("primary")
                    if isinstance(element.get("primary"), bool)
                    else None,
                    "element": dict(element),
                }
            )
    return rows


MAX_MEMBERSHIP_TTL = 100 * 366 * 86_400  # a century: longer is not a TTL, and it keeps expiry within int64


def group_columns(doc: Mapping[str, Any], ttl_urn: str) -> dict[str, Any]:
    display_name = doc.get("displayName") or ""
    ttl = (doc.get(ttl_urn) or {}).get("membershipTTL")
    if isinstance(ttl, int) and not 0 <= ttl <= MAX_MEMBERSHIP_TTL:
        raise invalid_value(f"membershipTTL must be between 0 and {MAX_MEMBERSHIP_TTL} seconds")
    return {
        "display_name": display_name,
        "display_name_ci": display_name.lower(),
        "external_id": _str_or_none(doc.get("externalId")),
        "membership_ttl": ttl if isinstance(ttl, int) and ttl > 0 else None,
    }
