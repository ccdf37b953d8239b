"""Input normalisation shared by POST, PUT and PATCH: a client's JSON becomes the canonical stored document.

One set of rules for every write, so a value means the same whether it arrived in a POST body or a PATCH op:

- Attribute names are matched case-insensitively (RFC 7643 §2.1) and stored in the schema's spelling: core
  attributes at the top level, extension attributes under their exact schema URN key.
- Values are validated and coerced to the schema type (RFC 7643 §2.3). Booleans also accept the strings
  `"True"`/`"False"` (any case), which Entra ID sends. A single value for a multi-valued attribute is wrapped in
  a list, and a bare value for a complex attribute with a `value` sub-attribute becomes `{"value": ...}` (Entra
  sends `manager` as a plain id): lenient clients are common, and neither shape is ambiguous.
- `null`, `""`, `[]` and `{}` are the unassigned state (RFC 7643 §2.5): they are dropped, never stored.
- `canonicalValues` are not enforced: RFC 7643 §2.3.1 lets servers accept other values, and Entra sends
  non-canonical `type`s (e.g. `emails[type eq "proxyAddress"]`).
- readOnly attributes (`id`, `meta`, `groups`, `manager.displayName`…) are dropped silently: RFC 7644 §3.3 and
  §3.5.1 say the server SHALL ignore them in input. Clients echo what they read; that is not an error.
- Unknown attributes are ignored, not refused. IdPs send whatever their admins map, and one unsupported
  attribute must never block the rest of the request: an Entra PATCH carrying `active: false` next to an
  unmapped custom attribute is a deprovisioning that has to succeed. Unknown schema URNs listed in `schemas`
  are ignored the same way (Entra lists its ADSCIM Group URN on every `POST /Groups`); the stored `schemas`
  only ever name the server's own schemas. A `schemas` list that is given must name the core schema
  (RFC 7643 §3). Nothing is ignored silently: each name goes into an `Ignored` (see `scim.ignored`), which
  the store audits and counts, and which refuses it when `strict_attributes` is on.
- An unqualified attribute name that is no core attribute but belongs to exactly one extension (`department`,
  `manager`) is that extension's attribute (resolved in `Registry.resolve_parts`); a value given both ways
  keeps the URN-qualified one.
- A singular complex attribute given as a one-element list (Entra's `manager: [{"value": id, "$ref": ...}]`)
  is that element; more than one element is refused, not silently cut.
- `password` (writeOnly) stays in the document only so the caller can hash it; the caller removes it, and the
  schema's `returned: never` keeps it out of every response.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Hashable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from scimjit.scim.errors import invalid_syntax, invalid_value
from scimjit.scim.ignored import Ignored
from scimjit.scim.schema import Attribute, AttrRef, Registry, ResourceType, UnknownAttribute

_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")
_BOOLEANS = {"true": True, "false": False}
_MEMBER_TYPES: dict[str, Literal["User", "Group"]] = {"user": "User", "group": "Group"}


class Member(TypedDict):
    """One group member as the membership table knows it: the member's id, and if given its resource type and
    the client's `display` (readWrite, so it is kept as sent)."""

    value: str
    type: Literal["User", "Group"] | None
    display: NotRequired[str]


def normalise(
    registry: Registry,
    rt: ResourceType,
    body: Mapping[str, Any],
    *,
    partial: bool = False,
    ignored: Ignored | None = None,
) -> dict[str, Any]:
    """The canonical document for a POST/PUT body (see the module docstring for the rules).

    `partial=True` is for fragments of a resource: required attributes are not checked. For Groups the result
    keeps `members` (normalised); the caller moves them to the membership table, as it moves `password` out.
    What the body held that the server does not know goes into `ignored` (or raises, if it is strict).
    """
    if not isinstance(body, Mapping):
        raise invalid_syntax("the request body must be a JSON object")
    ignored = ignored if ignored is not None else Ignored()
    declared: list[str] = []
    doc: dict[str, Any] = {}
    unqualified: dict[str, dict[str, Any]] = {}  # extension attributes named without their URN
    for key, value in body.items():
        if key.lower() == "schemas":
            declared = _declared_schemas(registry, rt, value, ignored)
            continue
        urn = registry.canonical_urn(rt, key)
        if urn is not None and urn != rt.schema:
            _put(doc, urn, _extension(registry, rt, urn, value, ignored))
            continue
        ref = _writable_attribute(registry, rt, None, key, ignored)
        if ref is not None:
            note_unknown_sub_attributes(ref.attr, value, ref.full_path, ignored)
            _put(
                unqualified.setdefault(ref.schema, {}) if ref.extension else doc,
                ref.attr.name,
                coerce(ref.attr, value, ref.full_path),
            )
    for urn, attrs in unqualified.items():
        _put(doc, urn, {**attrs, **doc.get(urn, {})} or None)
    if not partial:
        missing = missing_required(registry, rt, doc)
        if missing:
            raise invalid_value(f"required attribute missing: {', '.join(missing)}")
    return {"schemas": schemas_for(rt, doc, declared), **doc}


def _declared_schemas(registry: Registry, rt: ResourceType, value: Any, ignored: Ignored) -> list[str]:
    """The `schemas` a client listed that the resource type has, in canonical spelling; others are ignored.

    A list that is given must name the core schema (RFC 7643 §3: `schemas` is REQUIRED and names the
    resource's schemas); an absent one is tolerated, as it always was.
    """
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(urn, str) for urn in value):
        raise invalid_value("schemas must be a list of schema URNs")
    canonical = []
    for urn in value:
        known = registry.canonical_urn(rt, urn)
        if known is None:
            ignored.schema(urn, rt.name)
        else:
            canonical.append(known)
    if value and rt.schema not in canonical:
        raise invalid_value(f"schemas must include {rt.schema} (RFC 7643 §3)")
    return canonical


def schemas_for(rt: ResourceType, doc: Mapping[str, Any], declared: Iterable[str]) -> list[str]:
    """`schemas` of a document: the core schema, then each extension that was declared or holds data."""
    listed = set(declared)
    return [rt.schema, *(urn for urn, _ in rt.extensions if urn in listed or urn in doc)]


def _writable_attribute(
    registry: Registry, rt: ResourceType, urn: str | None, name: str, ignored: Ignored
) -> AttrRef | None:
    """The attribute `name` (in schema `urn`, or core/common/an unambiguous extension), or None when it is
    readOnly (dropped, RFC 7644 §3.3) or unknown (noted in `ignored`)."""
    try:
        ref = registry.resolve_parts(rt, urn, name, None)
    except UnknownAttribute as exc:
        ignored.attribute(f"{urn}:{name}" if urn else name, str(exc))
        return None
    return None if ref.attr.mutability == "readOnly" else ref


def note_unknown_sub_attributes(attr: Attribute, value: Any, path: str, ignored: Ignored) -> None:
    """Note the sub-attributes of a complex value (or of each element of a multi-valued one) that `attr` does
    not define: coercion drops them, and that must not be silent either."""
    if attr.type != "complex":
        return
    for element in value if isinstance(value, list) else [value]:
        if isinstance(element, Mapping):
            for key in element:
                if attr.sub(key) is None:
                    ignored.attribute(f"{path}.{key}", f"unknown sub-attribute of {attr.name}")


def missing_required(registry: Registry, rt: ResourceType, doc: Mapping[str, Any]) -> list[str]:
    """Required attributes the document lacks (RFC 7643 §2.2): of the core schema, of each extension that holds
    data, and whole extensions the resource type requires.

    Required sub-attributes are not enforced: RFC 7643's own enterprise schema marks `manager.$ref` required,
    yet IdPs send only `manager.value` and `$ref` is the server's to generate.
    """
    missing = [
        attr.name
        for attr in _schema_attributes(registry, rt.schema)
        if attr.required and attr.mutability != "readOnly" and attr.name not in doc
    ]
    for urn, required in rt.extensions:
        ext = doc.get(urn)
        if ext is None:
            if required:
                missing.append(urn)
            continue
        missing += [
            f"{urn}:{a.name}" for a in _schema_attributes(registry, urn) if a.required and a.name not in ext
        ]
    return missing


def coerce(attr: Attribute, value: Any, path: str) -> Any:
    """`value` validated and converted for `attr`; None when it is the unassigned state. `path` names the
    attribute in error messages."""
    if not attr.multi_valued:
        return _coerce_one(attr, value, path)
    if value is None:
        return None
    items = [_coerce_one(attr, item, path) for item in (value if isinstance(value, list) else [value])]
    values = [item for item in items if item is not None]
    if sum(1 for item in values if isinstance(item, dict) and item.get("primary") is True) > 1:
        raise invalid_value(f"{path}: at most one value may be primary (RFC 7643 §2.4)")
    return values or None


def is_equal_value(attr: Attribute, a: Any, b: Any) -> bool:
    """Whether two canonical values (or two elements of a multi-valued attribute) of `attr` are the same value:
    strings compare case-insensitively unless `caseExact`, complex values sub-attribute by sub-attribute."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if a.keys() != b.keys():
            return False
        return all(_sub_equal(attr, key, a[key], b[key]) for key in a)
    if isinstance(a, str) and isinstance(b, str) and not attr.case_exact:
        return a.lower() == b.lower()
    return type(a) is type(b) and a == b


def value_key(attr: Attribute, value: Any) -> Hashable:
    """A hashable key of a canonical value of `attr`: two values `is_equal_value` calls the same have the same
    key, so a set of keys answers "is this value already in the list?" without comparing it to each one."""
    if isinstance(value, Mapping):
        return frozenset((key, _sub_key(attr, key, item)) for key, item in value.items())
    if isinstance(value, str):
        return ("str", value if attr.case_exact else value.lower())
    if isinstance(value, Hashable):
        return (type(value).__name__, value)
    return (type(value).__name__, orjson.dumps(value, option=orjson.OPT_SORT_KEYS))


def _sub_key(attr: Attribute, key: str, value: Any) -> Hashable:
    """An undeclared key compares with `==` in `is_equal_value`, so its key is the value itself."""
    sub = attr.sub(key)
    if sub is not None:
        return value_key(sub, value)
    return value if isinstance(value, Hashable) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def is_empty(value: Any) -> bool:
    """The unassigned state of RFC 7643 §2.5: null, an empty string, list or object."""
    return value is None or (isinstance(value, str | list | dict) and not value)


def parse_datetime(value: Any) -> datetime | None:
    """An RFC 3339 date-time (xsd:dateTime, RFC 7643 §2.3.5) as an aware UTC datetime; None if it is not one.
    A value without an offset is taken as UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and _DATETIME.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            return None
    else:
        return None
    try:
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-05:00 is past datetime.max in UTC
        return None


def members_of(value: Any) -> list[Member]:
    """Group members from a coerced `members` value: each needs its id in `value`; `type` is `User` or `Group`
    in any case, or absent. Duplicates are dropped (one membership per id)."""
    members: dict[str, Member] = {}
    for element in value or ():
        member_id = element.get("value")
        if not isinstance(member_id, str):
            raise invalid_value("members: every member needs its id in `value`")
        kind = element.get("type")
        member_type = _MEMBER_TYPES.get(kind.lower()) if isinstance(kind, str) else None
        if kind is not None and member_type is None:
            raise invalid_value(f"members: type {kind!r} is neither User nor Group")
        member = Member(value=member_id, type=member_type)
        if isinstance(element.get("display"), str) and element["display"]:
            member["display"] = element["display"]
        members.setdefault(member_id, member)
    return list(members.values())


def _sub_equal(attr: Attribute, key: str, a: Any, b: Any) -> bool:
    sub = attr.sub(key)
    return is_equal_value(sub, a, b) if sub is not None else a == b


def _schema_attributes(registry: Registry, urn: str) -> Iterable[Attribute]:
    schema = registry.schema(urn)
    return schema.attributes.values() if schema is not None else ()


def _put(doc: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        doc[key] = value


def _extension(
    registry: Registry, rt: ResourceType, urn: str, value: Any, ignored: Ignored
) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid_value(f"{urn} must be an object holding the extension's attributes")
    ext: dict[str, Any] = {}
    for key, item in value.items():
        ref = _writable_attribute(registry, rt, urn, key, ignored)
        if ref is not None:
            note_unknown_sub_attributes(ref.attr, item, ref.full_path, ignored)
            _put(ext, ref.attr.name, coerce(ref.attr, item, ref.full_path))
    return ext or None


def _coerce_one(attr: Attribute, value: Any, path: str) -> Any:
    if is_empty(value):
        return None
    if attr.type == "complex":
        return _coerce_complex(attr, value, path)
    return _SCALARS.get(attr.type, _string)(value, path)


def _coerce_complex(attr: Attribute, value: Any, path: str) -> dict[str, Any] | None:
    if isinstance(value, list) and not attr.multi_valued:  # Entra: manager: [{"value": id, "$ref": ...}]
        if len(value) > 1:
            raise invalid_value(f"{path} is single-valued: got {len(value)} values")
        return _coerce_one(attr, value[0], path)
    if not isinstance(value, Mapping):
        if attr.sub("value") is None or isinstance(value, list):
            raise invalid_value(f"{path} must be an object")
        value = {"value": value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = attr.sub(key)
        if sub is not None and sub.mutability != "readOnly":
            _put(out, sub.name, coerce(sub, item, f"{path}.{sub.name}"))
    return out or None


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise invalid_value(f"{path} must be a string")
    return value


def _binary(value: Any, path: str) -> str:
    text = _string(value, path)
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except ValueError:  # binascii.Error, or characters outside ASCII
        raise invalid_value(f"{path} must be base64-encoded binary") from None
    return text


def _boolean(value: Any, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _BOOLEANS:
        return _BOOLEANS[value.lower()]
    raise invalid_value(f"{path} must be a boolean")


def _integer(value: Any, path: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise invalid_value(f"{path} must be an integer")


def _decimal(value: Any, path: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise invalid_value(f"{path} must be a decimal number")


def _datetime(value: Any, path: str) -> str:
    """Stored in one spelling (UTC, `Z`) so that stored values compare and sort as text."""
    parsed = parse_datetime(value)
    if parsed is None:
        raise invalid_value(f"{path} must be an RFC 3339 date-time, e.g. 2024-01-31T12:00:00Z")
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if parsed.microsecond else "%Y-%m-%dT%H:%M:%SZ")


_SCALARS: dict[str, Callable[[Any, str], Any]] = {
    "string": _string,
    "reference": _string,
    "binary": _binary,
    "boolean": _boolean,
    "integer": _integer,
    "decimal": _decimal,
    "dateTime": _datetime,
}
