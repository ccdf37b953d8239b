"""`attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5, §3.9) and the schema's `returned` rules.

`Projection` is parsed once per request; the store asks `wants()` before reading expensive parts (members,
groups) so that, e.g., `excludedAttributes=members` never touches the membership table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scimjit.scim.errors import invalid_value
from scimjit.scim.schema import Attribute, Registry, ResourceType, UnknownAttribute

ALWAYS = frozenset({"id", "schemas"})


@dataclass(frozen=True, slots=True)
class Projection:
    include: frozenset[str]  # canonical full paths ("userName", "name.givenName", "urn:...:User:manager")
    exclude: frozenset[str]

    @property
    def is_default(self) -> bool:
        return not self.include and not self.exclude

    def wants(self, full_path: str, returned: str = "default") -> bool:
        """Whether a top-level attribute (canonical full path) appears in the response."""
        if returned == "never":
            return False
        if returned == "always" or full_path in ALWAYS:
            return True
        if self.include:
            return full_path in self.include or any(p.startswith(full_path + ".") for p in self.include)
        if returned == "request":
            return False
        return full_path not in self.exclude


def parse_projection(
    registry: Registry,
    rt: ResourceType,
    attributes: str | Iterable[str] | None,
    excluded: str | Iterable[str] | None,
    *,
    lenient: bool = False,
) -> Projection:
    """`lenient` skips names the type does not have (a root `/.search` spans types with different schemas)."""
    return Projection(_paths(registry, rt, attributes, lenient), _paths(registry, rt, excluded, lenient))


def _paths(
    registry: Registry, rt: ResourceType, value: str | Iterable[str] | None, lenient: bool = False
) -> frozenset[str]:
    if not value:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: set[str] = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        urn = registry.canonical_urn(rt, item)
        if urn is not None:  # a whole extension schema
            out.add(urn)
            continue
        try:
            out.add(registry.resolve(rt, item).full_path)
        except UnknownAttribute as exc:
            if not lenient:
                raise invalid_value(f"attributes: {exc}") from None
    return frozenset(out)


def apply(
    registry: Registry, rt: ResourceType, doc: Mapping[str, Any], projection: Projection
) -> dict[str, Any]:
    """Shape a full resource document for the response. A document the projection leaves as it is comes back
    itself, not a copy (a page of 100 users would copy 100 documents made for this response alone)."""
    if projection.is_default:  # the common case: only attributes that are never returned by default go
        guarded = _guarded_keys(registry, rt)
        if guarded.isdisjoint(doc):
            return doc if isinstance(doc, dict) else dict(doc)
    core = registry.schema(rt.schema)
    assert core is not None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("schemas", "id"):
            out[key] = value
        elif key == "meta" or key == "externalId":
            if projection.wants(key):
                out[key] = _sub_project(value, key, None, projection) if key == "meta" else value
        elif registry.is_extension(rt, key):
            ext = _project_extension(registry, key, value, projection)
            if ext:
                out[key] = ext
        else:
            attr = core.attribute(key)
            if attr is None or not projection.wants(attr.name, attr.returned):
                continue
            out[key] = _sub_project(value, attr.name, attr, projection)
    return out


_GUARDED: dict[tuple[int, str], frozenset[str]] = {}


def _guarded_keys(registry: Registry, rt: ResourceType) -> frozenset[str]:
    """Top-level keys a default projection may have to change: attributes (or extensions holding attributes)
    that are `returned: never` / `request`, or have such sub-attributes. Everything else passes through."""
    key = (id(registry), rt.name)
    found = _GUARDED.get(key)
    if found is None:
        guarded: set[str] = set()
        for urn in rt.schema_ids:
            schema = registry.schema(urn)
            assert schema is not None
            for attr in schema.attributes.values():
                subs = attr.sub_attributes.values()
                if attr.returned in ("never", "request") or any(
                    s.returned in ("never", "request") for s in subs
                ):
                    guarded.add(attr.name if urn == rt.schema else urn)
        found = _GUARDED[key] = frozenset(guarded)
    return found


def guarded_needles(registry: Registry, rt: ResourceType) -> tuple[str, ...]:
    """`"key":` for each of `_guarded_keys`: a stored document's JSON text holding none of them is what a
    default projection returns unchanged (`store.users.encoded`)."""
    return tuple(f'"{key}":' for key in sorted(_guarded_keys(registry, rt)))


def _project_extension(registry: Registry, urn: str, value: Any, projection: Projection) -> dict[str, Any]:
    schema = registry.schema(urn)
    if schema is None or not isinstance(value, Mapping):
        return {}
    if projection.include and urn in projection.include:
        return {
            k: v for k, v in value.items() if (a := schema.attribute(k)) is not None and a.returned != "never"
        }
    if urn in projection.exclude:
        return {}
    out = {}
    for key, item in value.items():
        attr = schema.attribute(key)
        if attr is not None and projection.wants(f"{urn}:{attr.name}", attr.returned):
            out[key] = _sub_project(item, f"{urn}:{attr.name}", attr, projection)
    return out


def _sub_project(value: Any, path: str, attr: Attribute | None, projection: Projection) -> Any:
    """Narrow a complex value to requested sub-attributes (`name.givenName`), drop excluded/never ones."""
    include = {p[len(path) + 1 :] for p in projection.include if p.startswith(path + ".")}
    exclude = {p[len(path) + 1 :] for p in projection.exclude if p.startswith(path + ".")}
    never = {s.name for s in attr.sub_attributes.values() if s.returned == "never"} if attr else set()
    if not (include or exclude or never):
        return value

    def narrow(element: Any) -> Any:
        if not isinstance(element, Mapping):
            return element
        return {
            k: v
            for k, v in element.items()
            if k not in never and k not in exclude and (not include or k in include)
        }

    if isinstance(value, list):
        return [narrow(e) for e in value]
    return narrow(value)
