"""Schema registry: `schemas/*.json` (RFC 7643 §7 form) is the single source of truth.

Validation, type coercion, mutability, `returned`, `caseExact`, discovery and filter/PATCH path resolution all
ask this registry. Attribute names are matched case-insensitively (RFC 7644 §3.10) and resolved once into
`AttrRef`s that carry the canonical spelling. An unqualified name that no core attribute has resolves to the
one extension of the resource type that defines it (`manager` is the enterprise `manager`), here and only
here, so that PATCH paths, bodies, filters, `attributes` and `sortBy` all agree.
"""

from __future__ import annotations

import copy
import importlib.resources
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import orjson

SCHEMA_URN = "urn:ietf:params:scim:schemas:core:2.0:Schema"
RESOURCE_TYPE_URN = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
USER_URN = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_URN = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_URN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
JIT_GROUP_URN = "urn:scimjit:params:scim:schemas:extension:jit:2.0:Group"
EXTENDS_KEY = "x-scimjit-extends"  # in a schema file: the resource types it extends (stripped when served)


def _builtin_schemas() -> Traversable:
    """The repository's top-level `schemas/`, shipped as the data package `scimjit._schemas` (setup.py).

    Found through the import system, never beside the source tree, so the same lookup works in a wheel, an
    editable install and a zip. Without an install (a bare `PYTHONPATH=.` checkout) there is no such package:
    say how to get one instead of a bare ModuleNotFoundError.
    """
    try:
        return importlib.resources.files("scimjit._schemas")
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            "scimjit's built-in schemas are missing: install the package (`pip install .` or `make install`)"
        ) from exc


DEFAULT_SCHEMAS_DIR: Traversable = _builtin_schemas()


class UnknownAttribute(LookupError):
    """A path names no attribute of the resource type; callers turn it into the right SCIM error."""


class AmbiguousAttribute(UnknownAttribute):
    """An unqualified name that is no core attribute but belongs to two or more extensions: the client has to
    qualify it with the schema URN. An `UnknownAttribute` so that every caller treats it as one (ignored in a
    body, refused in a filter), with a message that says how to fix it."""


@dataclass(frozen=True, slots=True)
class Attribute:
    name: str
    type: str
    multi_valued: bool = False
    required: bool = False
    case_exact: bool = False
    mutability: str = "readWrite"
    returned: str = "default"
    uniqueness: str = "none"
    canonical_values: tuple[str, ...] = ()
    reference_types: tuple[str, ...] = ()
    sub_attributes: Mapping[str, Attribute] = field(default_factory=dict)

    def sub(self, name: str) -> Attribute | None:
        return self.sub_attributes.get(name.lower())

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Attribute:
        subs = {s["name"].lower(): cls.from_json(s) for s in doc.get("subAttributes", ())}
        return cls(
            name=doc["name"],
            type=doc.get("type", "string"),
            multi_valued=bool(doc.get("multiValued", False)),
            required=bool(doc.get("required", False)),
            case_exact=bool(doc.get("caseExact", False)),
            mutability=doc.get("mutability", "readWrite"),
            returned=doc.get("returned", "default"),
            uniqueness=doc.get("uniqueness", "none"),
            canonical_values=tuple(doc.get("canonicalValues", ())),
            reference_types=tuple(doc.get("referenceTypes", ())),
            sub_attributes=subs,
        )


@dataclass(frozen=True, slots=True)
class Schema:
    id: str
    name: str
    description: str
    attributes: Mapping[str, Attribute]
    document: Mapping[str, Any]

    def attribute(self, name: str) -> Attribute | None:
        return self.attributes.get(name.lower())


@dataclass(frozen=True, slots=True)
class ResourceType:
    name: str
    endpoint: str
    description: str
    schema: str
    extensions: tuple[tuple[str, bool], ...] = ()  # (schema URN, required)
    # Derived once (`Registry.canonical_urn` and `split_urn` run for every attribute of every request body):
    schema_ids: tuple[str, ...] = field(init=False, compare=False, repr=False)
    by_lower: Mapping[str, str] = field(init=False, compare=False, repr=False)  # lower-cased URN -> URN
    longest_first: tuple[tuple[str, str], ...] = field(init=False, compare=False, repr=False)  # (lower, URN)

    def __post_init__(self) -> None:
        ids = (self.schema, *(urn for urn, _ in self.extensions))
        by_lower: dict[str, str] = {}
        for urn in ids:
            by_lower.setdefault(urn.lower(), urn)  # the first spelling wins, as the scan in order did
        object.__setattr__(self, "schema_ids", ids)
        object.__setattr__(self, "by_lower", by_lower)
        longest = sorted(ids, key=len, reverse=True)
        object.__setattr__(self, "longest_first", tuple((urn.lower(), urn) for urn in longest))

    def document(self, base_url: str = "") -> dict[str, Any]:
        doc: dict[str, Any] = {
            "schemas": [RESOURCE_TYPE_URN],
            "id": self.name,
            "name": self.name,
            "endpoint": self.endpoint,
            "description": self.description,
            "schema": self.schema,
            "schemaExtensions": [{"schema": urn, "required": req} for urn, req in self.extensions],
            "meta": {"resourceType": "ResourceType", "location": f"{base_url}/ResourceTypes/{self.name}"},
        }
        return doc


@dataclass(frozen=True, slots=True)
class AttrRef:
    """A resolved attribute path: where the attribute lives and its definitions."""

    schema: str  # URN of the defining schema; "" for the common attributes id, externalId, meta
    attr: Attribute
    sub: Attribute | None = None
    extension: bool = False  # True when it lives under its schema URN key in the resource document

    @property
    def path(self) -> str:
        """Canonical dotted path inside the (core or extension) object, e.g. `name.familyName`."""
        return f"{self.attr.name}.{self.sub.name}" if self.sub else self.attr.name

    @property
    def leaf(self) -> Attribute:
        return self.sub or self.attr

    @property
    def full_path(self) -> str:
        return f"{self.schema}:{self.path}" if self.extension else self.path


COMMON_ATTRIBUTES: dict[str, Attribute] = {
    "id": Attribute(
        "id", "string", case_exact=True, mutability="readOnly", returned="always", uniqueness="server"
    ),
    "externalid": Attribute("externalId", "string", case_exact=True),
    "meta": Attribute(
        "meta",
        "complex",
        mutability="readOnly",
        sub_attributes={
            "resourcetype": Attribute("resourceType", "string", case_exact=True, mutability="readOnly"),
            "created": Attribute("created", "dateTime", mutability="readOnly"),
            "lastmodified": Attribute("lastModified", "dateTime", mutability="readOnly"),
            "location": Attribute("location", "reference", case_exact=True, mutability="readOnly"),
            "version": Attribute("version", "string", case_exact=True, mutability="readOnly"),
        },
    ),
}


class Registry:
    """Every schema and resource type the server knows, loaded once at start."""

    def __init__(self, schemas: Iterable[Schema], resource_types: Iterable[ResourceType]) -> None:
        self.schemas: dict[str, Schema] = {s.id.lower(): s for s in schemas}
        self.resource_types: dict[str, ResourceType] = {rt.name: rt for rt in resource_types}
        for rt in self.resource_types.values():
            for urn in rt.schema_ids:
                if urn.lower() not in self.schemas:
                    raise ValueError(f"resource type {rt.name} names unknown schema {urn}")
        # (resource type, lower-cased attribute name) -> the extensions defining it, for unqualified names
        self._in_extensions: dict[tuple[str, str], list[str]] = {}
        for rt in self.resource_types.values():
            for urn, _ in rt.extensions:
                for key in self.schemas[urn.lower()].attributes:
                    self._in_extensions.setdefault((rt.name, key), []).append(urn)

    def schema(self, urn: str) -> Schema | None:
        return self.schemas.get(urn.lower())

    def resource_type(self, name: str) -> ResourceType:
        return self.resource_types[name]

    def is_extension(self, rt: ResourceType, urn: str) -> bool:
        return any(urn.lower() == ext.lower() for ext, _ in rt.extensions)

    def canonical_urn(self, rt: ResourceType, urn: str) -> str | None:
        return rt.by_lower.get(urn.lower())

    def split_urn(self, rt: ResourceType, path: str) -> tuple[str | None, str]:
        """Split `urn:...:User:name.givenName` into (schema URN, `name.givenName`); plain paths give (None, path)."""
        lowered = path.lower()
        for u, urn in rt.longest_first:
            if lowered == u:
                return urn, ""
            if lowered.startswith(u + ":"):
                return urn, path[len(u) + 1 :]
        return None, path

    def resolve_parts(
        self, rt: ResourceType, urn: str | None, attr_name: str, sub_name: str | None
    ) -> AttrRef:
        """Resolve (schema URN, attribute, sub-attribute) against a resource type."""
        if urn is not None:
            canonical = self.canonical_urn(rt, urn)
            if canonical is None:
                raise UnknownAttribute(f"unknown schema {urn!r} for {rt.name}")
            candidates = [canonical]
        else:
            candidates = [rt.schema]
        attr: Attribute | None = None
        owner = ""
        for candidate in candidates:
            found = self.schemas[candidate.lower()].attribute(attr_name)
            if found is not None:
                attr, owner = found, candidate
                break
        if attr is None and urn is None:
            common = COMMON_ATTRIBUTES.get(attr_name.lower())
            if common is not None:
                attr, owner = common, ""
        if attr is None and urn is None:
            attr, owner = self._unqualified_extension(rt, attr_name)
        if attr is None:
            raise UnknownAttribute(f"unknown attribute {attr_name!r} for {rt.name}")
        sub: Attribute | None = None
        if sub_name:
            sub = attr.sub(sub_name)
            if sub is None:
                raise UnknownAttribute(f"unknown sub-attribute {attr.name}.{sub_name}")
        return AttrRef(owner, attr, sub, extension=owner != "" and owner != rt.schema)

    def _unqualified_extension(self, rt: ResourceType, attr_name: str) -> tuple[Attribute | None, str]:
        """An unqualified name that is no core or common attribute, in the one extension that defines it.

        Entra's legacy PATCH sends `path: manager`, and admins map `department` or `employeeNumber` without
        the enterprise URN: storing nothing for them (and answering 200) was silent data loss. Only an
        unambiguous name is resolved: core attributes win (they are looked up first), and a name that two
        extensions define raises `AmbiguousAttribute`.
        """
        owners = self._in_extensions.get((rt.name, attr_name.lower()), [])
        if len(owners) > 1:
            raise AmbiguousAttribute(
                f"{attr_name!r} is an attribute of several extensions of {rt.name} "
                f"({', '.join(owners)}): qualify it with the schema URN"
            )
        if not owners:
            return None, ""
        return self.schemas[owners[0].lower()].attribute(attr_name), owners[0]

    def resolve(self, rt: ResourceType, path: str) -> AttrRef:
        """Resolve a dotted attribute path, optionally URN-qualified (`emails.value`, `urn:...:User:manager.value`)."""
        urn, rest = self.split_urn(rt, path)
        if not rest:
            raise UnknownAttribute(f"path {path!r} names a schema, not an attribute")
        parts = rest.split(".")
        if len(parts) > 2 or not all(parts):
            raise UnknownAttribute(f"invalid attribute path {path!r}")
        return self.resolve_parts(rt, urn, parts[0], parts[1] if len(parts) == 2 else None)

    def schema_documents(self, base_url: str = "") -> list[dict[str, Any]]:
        docs = []
        for schema in self.schemas.values():
            doc = {k: copy.deepcopy(v) for k, v in schema.document.items() if k != EXTENDS_KEY}
            doc["schemas"] = [SCHEMA_URN]
            doc["meta"] = {"resourceType": "Schema", "location": f"{base_url}/Schemas/{schema.id}"}
            docs.append(doc)
        return docs


def _read_documents(directory: Traversable) -> list[dict[str, Any]]:
    """Every `*.json` of one directory, in file-name order (a `Path` or a package resource directory)."""
    docs: list[dict[str, Any]] = []
    if not directory.is_dir():  # as before: a `schemas_dirs` entry that does not exist adds nothing
        return docs
    files = (f for f in directory.iterdir() if f.name.endswith(".json") and f.is_file())
    for file in sorted(files, key=lambda f: f.name):
        loaded = orjson.loads(file.read_bytes())
        docs.extend(loaded if isinstance(loaded, list) else [loaded])
    return docs


def load_registry(extra_dirs: Iterable[Path | Traversable | str] = ()) -> Registry:
    """Load `schemas/` and any deployment directories; later files may add extension schemas."""
    schemas: list[Schema] = []
    rts: dict[str, dict[str, Any]] = {}
    extends: list[tuple[str, str]] = []
    for directory in (DEFAULT_SCHEMAS_DIR, *extra_dirs):
        for doc in _read_documents(Path(directory) if isinstance(directory, str) else directory):
            if RESOURCE_TYPE_URN in doc.get("schemas", ()):
                rts[doc["name"]] = doc
                continue
            attributes = {a["name"].lower(): Attribute.from_json(a) for a in doc.get("attributes", ())}
            schemas.append(
                Schema(doc["id"], doc.get("name", ""), doc.get("description", ""), attributes, doc)
            )
            extends.extend((rt_name, doc["id"]) for rt_name in doc.get(EXTENDS_KEY, ()))
    resource_types = []
    for name, doc in rts.items():
        exts = [(e["schema"], bool(e.get("required", False))) for e in doc.get("schemaExtensions", ())]
        exts += [(urn, False) for rt_name, urn in extends if rt_name == name and urn not in dict(exts)]
        resource_types.append(
            ResourceType(name, doc["endpoint"], doc.get("description", ""), doc["schema"], tuple(exts))
        )
    return Registry(schemas, resource_types)
