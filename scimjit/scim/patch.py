"""PATCH (RFC 7644 §3.5.2) applied in memory to a stored document: pure, no SQL, no HTTP.

Three steps, one concept each:

1. `_operations` checks the PatchOp message itself (schemas, `Operations`, each op an object).
2. `_normalise_dialects` is the one place where IdP shapes become RFC shapes: Entra's capitalised ops, its
   path-less values with dotted (`name.givenName`) and URN-qualified keys, its `Remove members` carrying a
   `value` list, and Okta's path-less `{"id": ..., "displayName": ...}`. Every path is resolved here, so later
   steps only see canonical `_Op`s (string booleans and bare `manager` ids are value coercion, shared with
   POST/PUT in `scim.resource`).
3. `_apply` runs each op against one working copy of the document (copied once per PATCH, never per op), and
   each op costs what it touches: an `add` to a multi-valued attribute checks its values against an index of
   the list (`_ListIndex`), not by a scan, so 10,000 `add emails` ops cost 10,000 element insertions, not 50
   million comparisons. Group `members` are never in the document (they live in the membership table and
   change by delta), so ops on them become `MemberOp`s instead.

The number of operations is capped by the caller (`max_operations`, the `patch_max_operations` setting):
over it the PATCH is `400 tooMany` before any operation runs.

Semantics decided beyond the letter of the RFC, each for a client that depends on it:
- An `add` or `replace` whose value filter matches nothing adds the element the filter describes (its `eq`
  sub-attribute values plus the op's value), because Entra sets `emails[type eq "work"].value` on users that
  have no work email yet. A filter that does not describe one element (`or`, `co`, ...) is `noTarget`.
- A `remove` whose filter matches nothing changes nothing: IdPs retry, and a retried remove must succeed.
- Paths naming unknown attributes are skipped, as unknown attributes are ignored on POST/PUT (see
  `scim.resource`): an unmapped attribute must not block the rest of the request. Each one is noted in the
  `Ignored` of the request (audited and counted by the store; refused under `strict_attributes`: an explicit
  `path` as `invalidPath`, a key inside a value as `invalidValue`). Unqualified names of extension
  attributes (`path: manager`) resolve to their extension in the registry, as everywhere.
- readOnly attributes named by an explicit `path` are refused (`mutability`, RFC 7644 §3.5.2); inside a
  path-less value they are ignored, as in a PUT body, except an `id` that differs from the resource's.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from scimjit.scim.errors import (
    invalid_filter,
    invalid_path,
    invalid_syntax,
    invalid_value,
    mutability,
    no_target,
    too_many,
)
from scimjit.scim.evaluate import matches
from scimjit.scim.filter import parse_filter
from scimjit.scim.ignored import Ignored
from scimjit.scim.predicate import And, Compare, Or, Predicate
from scimjit.scim.resource import (
    Member,
    coerce,
    is_empty,
    members_of,
    missing_required,
    note_unknown_sub_attributes,
    schemas_for,
    value_key,
)
from scimjit.scim.schema import GROUP_URN, Attribute, AttrRef, Registry, ResourceType, UnknownAttribute

PATCH_OP_URN = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
_OPS = frozenset({"add", "remove", "replace"})
_NO_VALUE: Final[Any] = object()  # an op without a "value" member (null is a value: the unassigned state)
_MEMBER_FILTER_HELP = (
    'members filters in a PATCH path support only `value eq "<id>"`, joined by `or`: memberships are changed '
    "by id in their own table, without loading the group"
)


@dataclass(frozen=True, slots=True)
class MemberOp:
    """A change to a group's membership, to be applied by the store in order.

    `remove_all` empties the group (its `members` is empty); `add`/`remove` carry the members concerned.
    """

    action: Literal["add", "remove", "remove_all"]
    members: list[Member] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PatchResult:
    """The patched document (a new dict; `password`, if set, is still in it for the caller to hash and
    remove), the membership changes in order, and the canonical paths of the document that changed.

    `changed` is empty for a no-op PATCH, so the caller keeps the version and `lastModified` (RFC 7644
    §3.5.2.1). Membership changes are not in it: only the store knows whether a member was already there.
    """

    document: dict[str, Any]
    member_ops: list[MemberOp]
    changed: set[str]


@dataclass(frozen=True, slots=True)
class _Path:
    """A resolved PATCH path: `ref` (attribute, optional sub-attribute) and an optional value filter on it;
    or, when `ref` is None, the whole schema `schema` (`urn:...:enterprise:2.0:User`)."""

    schema: str
    ref: AttrRef | None = None
    filter: Predicate | None = None


@dataclass(frozen=True, slots=True)
class _Op:
    op: str  # "add" | "remove" | "replace"
    path: _Path
    value: Any
    where: str  # "Operations[2]", for error messages


@dataclass(slots=True)
class _ListIndex:
    """A multi-valued attribute's list in the working copy, indexed for `add`: the values it holds (by
    `value_key`, which agrees with `is_equal_value`) and which elements are primary. Built once, on the first
    `add` to the list, and used while the document still holds this very list (`elements`): any other op on
    the attribute stores a new list, so an index can never outlive the list it describes."""

    elements: list[Any]
    keys: set[Hashable]
    primaries: set[int]


@dataclass(slots=True)
class _Patch:
    """What one PATCH request works on."""

    registry: Registry
    rt: ResourceType
    doc: dict[str, Any]
    ignored: Ignored
    member_ops: list[MemberOp] = field(default_factory=list)
    lists: dict[str, _ListIndex] = field(default_factory=dict)  # by canonical attribute path

    @property
    def is_group(self) -> bool:
        return self.rt.schema == GROUP_URN


def apply_patch(
    registry: Registry,
    rt: ResourceType,
    document: Mapping[str, Any],
    body: Mapping[str, Any],
    ignored: Ignored | None = None,
    max_operations: int | None = None,
) -> PatchResult:
    """Apply a PatchOp message to `document` (the stored document, with its `id`) without mutating it.

    Raises `ScimError` (400, with the RFC 7644 §3.12 `scimType`) for anything the client got wrong; the
    operations are all-or-nothing, as RFC 7644 §3.5.2 requires. Unknown names go into `ignored`. More than
    `max_operations` operations are `tooMany`.
    """
    operations = _operations(body)
    if max_operations is not None and len(operations) > max_operations:
        raise too_many(
            f"the PATCH has {len(operations)} operations; at most {max_operations} are accepted per request "
            "(patch_max_operations): split it"
        )
    patch = _Patch(registry, rt, copy.deepcopy(dict(document)), ignored if ignored is not None else Ignored())
    for op in _normalise_dialects(patch, operations):
        _apply(patch, op)
    _check_required(patch, document)
    _finish(patch, document)
    return PatchResult(patch.doc, patch.member_ops, _changed(document, patch.doc))


# ---------------------------------------------------------------- 1. the message


def _operations(body: Any) -> list[Mapping[str, Any]]:
    if not isinstance(body, Mapping):
        raise invalid_syntax("the PATCH body must be a JSON object")
    schemas = _member(body, "schemas")
    if not isinstance(schemas, list) or not any(
        isinstance(urn, str) and urn.lower() == PATCH_OP_URN.lower() for urn in schemas
    ):
        raise invalid_syntax(f"a PATCH body must list {PATCH_OP_URN} in schemas")
    operations = _member(body, "Operations")
    if not isinstance(operations, list) or not operations:
        raise invalid_syntax("Operations must be a non-empty list")
    if not all(isinstance(op, Mapping) for op in operations):
        raise invalid_syntax("each of Operations must be an object")
    return operations


def _member(obj: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """A member of a message object; names are case-insensitive like attribute names (RFC 7643 §2.1)."""
    return next((value for key, value in obj.items() if key.lower() == name.lower()), default)


# ---------------------------------------------------------------- 2. dialects


def _normalise_dialects(patch: _Patch, operations: list[Mapping[str, Any]]) -> Iterator[_Op]:
    """Each raw operation as zero or more canonical ops (see the module docstring for the shapes handled)."""
    for index, raw in enumerate(operations):
        where = f"Operations[{index}]"
        op = _op_name(raw, where)
        path_text, value = _member(raw, "path"), _member(raw, "value", _NO_VALUE)
        if op == "remove":
            if path_text is None:
                raise no_target(f"{where}: remove needs a path (RFC 7644 §3.5.2.2)")
            path = _parse_path(patch, path_text, where)
            if path is not None:
                yield from _remove_op(path, value, where)
            continue
        if value is _NO_VALUE or (op == "add" and value is None):
            raise invalid_value(f"{where}: {op} needs a value (RFC 7644 §3.5.2)")
        path = None if path_text is None else _parse_path(patch, path_text, where)
        if path_text is None or (path is not None and path.ref is None):
            prefix = "" if path is None else f"{path.schema}:"
            yield from _expand(patch, op, prefix, value, where)
        elif path is not None:
            yield _checked(patch, _Op(op, path, value, where))


def _op_name(raw: Mapping[str, Any], where: str) -> str:
    """The op, lower-cased: Entra without `aadOptscim062020` sends `Add`, `Replace`, `Remove`."""
    op = _member(raw, "op")
    if not isinstance(op, str) or op.lower() not in _OPS:
        raise invalid_syntax(f"{where}: op must be add, remove or replace, not {op!r}")
    return op.lower()


def _expand(patch: _Patch, op: str, prefix: str, value: Any, where: str) -> Iterator[_Op]:
    """A value holding several attributes (path-less, or a path naming a schema) as one op per attribute.

    RFC 7644 §3.5.2.1/§3.5.2.3 define such a value as a set of attributes each added/replaced in turn. Keys may
    be plain (`active`), dotted (`name.givenName`), URN-qualified (`urn:...:User:employeeNumber`) or a schema
    URN holding an object (Entra); `schemas`, readOnly attributes and an `id` equal to the resource's are what
    clients echo from a GET (Okta), and are skipped.
    """
    if not isinstance(value, Mapping):
        raise invalid_value(f"{where}: without a path, the value must be an object of attributes")
    for key, item in value.items():
        if key.lower() == "schemas":
            continue
        path = _parse_path(patch, prefix + key, where, in_value=True)
        if path is None:
            continue
        if path.ref is None:
            yield from _expand(patch, op, f"{path.schema}:", item, where)
        elif _is_read_only(path.ref):
            _check_same_id(patch, path.ref, item, where)
        else:
            yield _checked(patch, _Op(op, path, item, where))


def _checked(patch: _Patch, op: _Op) -> _Op:
    """`op`, after noting the sub-attributes its value holds that the attribute does not define."""
    ref = op.path.ref
    if ref is not None and ref.sub is None:
        note_unknown_sub_attributes(ref.attr, op.value, ref.full_path, patch.ignored)
    return op


def _check_same_id(patch: _Patch, ref: AttrRef, value: Any, where: str) -> None:
    if ref.attr.name == "id" and value != patch.doc.get("id"):
        raise mutability(f"{where}: id is readOnly and cannot be changed")


def _remove_op(path: _Path, value: Any, where: str) -> Iterator[_Op]:
    """A remove; one that carries a `value` list on a multi-valued attribute removes just those values.

    RFC 7644 §3.5.2.2 selects what to remove by the path alone, but Entra removes group members with
    `{"op": "Remove", "path": "members", "value": [{"value": id}]}`: read as the filter `value eq id or ...`.
    Ignoring the value would remove every member.
    """
    ref = path.ref
    plain_list = ref is not None and ref.attr.multi_valued and ref.sub is None and path.filter is None
    if ref is None or not plain_list or value is _NO_VALUE or value is None:
        yield _Op("remove", path, None, where)
        return
    sub = ref.attr.sub("value")
    if sub is None:
        raise invalid_value(
            f"{where}: remove selects {ref.attr.name} values by `value`, which it does not have"
        )
    compares: list[Predicate] = [
        Compare(AttrRef(ref.schema, ref.attr, sub, ref.extension), "eq", _selected_value(item, where))
        for item in (value if isinstance(value, list) else [value])
    ]
    if compares:  # an empty list removes nothing (not everything)
        yield _Op("remove", _Path(path.schema, ref, _any_of(compares)), None, where)


def _selected_value(item: Any, where: str) -> str:
    selected = item.get("value") if isinstance(item, Mapping) else item
    if not isinstance(selected, str):
        raise invalid_value(f"{where}: each value to remove needs its `value`")
    return selected


def _any_of(predicates: list[Predicate]) -> Predicate:
    """`p1 or p2 or ...`, balanced so that long lists stay shallow."""
    if len(predicates) == 1:
        return predicates[0]
    middle = len(predicates) // 2
    return Or(_any_of(predicates[:middle]), _any_of(predicates[middle:]))


# ---------------------------------------------------------------- paths


def _parse_path(patch: _Patch, text: Any, where: str, *, in_value: bool = False) -> _Path | None:
    """Resolve `attr`, `attr.sub`, `attr[filter]`, `attr[filter].sub`, each optionally URN-qualified, or a
    schema URN alone. None when the path names an unknown attribute (skipped and noted, see the module
    docstring); `in_value` says it is a key of a path-less value rather than an explicit `path`."""
    if not isinstance(text, str) or not text.strip():
        raise invalid_path(f"{where}: path must be a non-empty string")
    urn, rest = patch.registry.split_urn(patch.rt, text.strip())
    if urn is not None and not rest:
        return _Path(urn)
    attr_text, filter_text, sub_text = _split_value_path(rest, where)
    if urn is None and ":" in attr_text:  # a schema URN this resource type does not have
        return _unknown(patch, text.strip(), where, in_value, "names a schema this resource type lacks")
    names = attr_text.split(".")
    if filter_text is None and len(names) == 2:
        names, sub_text = names[:1], names[1]
    if len(names) != 1 or not names[0] or sub_text == "":
        raise invalid_path(f"{where}: {text!r} is not a valid attribute path")
    try:
        ref = _resolve(patch, urn, names[0], sub_text, where)
    except UnknownAttribute as exc:
        return _unknown(patch, text.strip(), where, in_value, str(exc))
    if filter_text is None:
        return _Path(ref.schema, ref)
    if not (ref.attr.multi_valued and ref.attr.type == "complex"):
        raise invalid_path(f"{where}: {ref.attr.name} is not multi-valued and complex: it takes no filter")
    within = AttrRef(ref.schema, ref.attr, None, ref.extension)
    return _Path(ref.schema, ref, parse_filter(patch.registry, patch.rt, filter_text, within=within))


def _split_value_path(rest: str, where: str) -> tuple[str, str | None, str | None]:
    """`emails[type eq "work"].value` -> (`emails`, `type eq "work"`, `value`); brackets inside quoted filter
    strings do not count."""
    start = rest.find("[")
    if start < 0:
        if "]" in rest:
            raise invalid_path(f"{where}: unbalanced ']' in path")
        return rest, None, None
    end = _closing_bracket(rest, start + 1)
    if end is None:
        raise invalid_path(f"{where}: unclosed '[' in path")
    tail = rest[end + 1 :]
    if tail and (not tail.startswith(".") or any(c in tail[1:] for c in ".[]")):
        raise invalid_path(f"{where}: only a sub-attribute may follow a filter, not {tail!r}")
    return rest[:start], rest[start + 1 : end], tail[1:] if tail else None


def _closing_bracket(text: str, start: int) -> int | None:
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = in_string
        elif char == '"':
            in_string = not in_string
        elif char == "]" and not in_string:
            return index
    return None


def _unknown(patch: _Patch, text: str, where: str, in_value: bool, why: str) -> _Path | None:
    """None, the path to skip, once it is noted as ignored (or refused, when strict)."""
    if in_value:
        patch.ignored.attribute(text, why)
    else:
        patch.ignored.path(text, where, why)
    return None


def _resolve(patch: _Patch, urn: str | None, name: str, sub_name: str | None, where: str) -> AttrRef:
    """The attribute (and sub-attribute) named; `UnknownAttribute` when the schema has none such."""
    ref = patch.registry.resolve_parts(patch.rt, urn, name, None)
    if sub_name is None:
        return ref
    if ref.attr.type != "complex":
        raise invalid_path(f"{where}: {ref.attr.name} has no sub-attributes")
    sub = ref.attr.sub(sub_name)
    if sub is None:
        raise UnknownAttribute(f"unknown sub-attribute {ref.attr.name}.{sub_name}")
    return AttrRef(ref.schema, ref.attr, sub, ref.extension)


# ---------------------------------------------------------------- 3. applying


def _apply(patch: _Patch, op: _Op) -> None:
    ref = op.path.ref
    if ref is None:
        _remove_schema(patch, op)
    elif patch.is_group and ref.attr.name == "members" and not ref.extension:
        patch.member_ops += _member_ops(op, ref)
    elif _is_read_only(ref):
        raise mutability(f"{op.where}: {ref.full_path} is readOnly")
    else:
        container = _container(patch.doc, ref)
        immutable = ref.attr.mutability == "immutable"  # only then is the old value needed (a copy of it)
        before = copy.deepcopy(container.get(ref.attr.name)) if immutable else None
        _write(patch, container, op, ref)
        if immutable:
            _check_immutable(ref.attr, before, container.get(ref.attr.name), op.where)


def _is_read_only(ref: AttrRef) -> bool:
    return ref.attr.mutability == "readOnly" or (ref.sub is not None and ref.sub.mutability == "readOnly")


def _check_immutable(attr: Attribute, before: Any, after: Any, where: str) -> None:
    """immutable: may be set while unassigned, never changed after (RFC 7643 §2.2, RFC 7644 §3.5.2)."""
    if attr.mutability == "immutable" and before is not None and before != after:
        raise mutability(f"{where}: {attr.name} is immutable")


def _container(doc: dict[str, Any], ref: AttrRef) -> dict[str, Any]:
    """The object that holds the attribute: the document, or its extension object (created empty; `_finish`
    drops it again if it stays empty)."""
    if not ref.extension:
        return doc
    ext = doc.get(ref.schema)
    if not isinstance(ext, dict):
        ext = doc[ref.schema] = {}
    return ext


def _remove_schema(patch: _Patch, op: _Op) -> None:
    schema = op.path.schema
    if op.op != "remove" or schema == patch.rt.schema:
        raise invalid_path(f"{op.where}: a path naming the core schema {schema} has no target")
    patch.doc.pop(schema, None)


def _write(patch: _Patch, container: dict[str, Any], op: _Op, ref: AttrRef) -> None:
    if ref.attr.multi_valued:
        if op.path.filter is None and ref.sub is None:
            _write_list(patch, container, op, ref)
        else:
            _write_elements(container, op, ref)
    elif op.op == "remove":
        _remove_single(container, ref)
    else:
        _set_single(container, op, ref)


def _set_single(container: dict[str, Any], op: _Op, ref: AttrRef) -> None:
    """add and replace on a singular attribute both set it; on a complex one both merge the given
    sub-attributes and leave the others (RFC 7644 §3.5.2.1 and §3.5.2.3)."""
    attr = ref.attr
    old = container.get(attr.name) or {}
    if ref.sub is not None:
        given = {ref.sub.name: coerce(ref.sub, op.value, ref.full_path)}
        value = _without_stale_ref(attr, old, {**old, **given}, given)
    elif attr.type == "complex" and not is_empty(op.value):
        given = _sub_values(attr, op.value, ref.full_path)
        value = _without_stale_ref(attr, old, {**old, **given}, given)
    else:  # a simple value, or null: the unassigned state (RFC 7643 §2.5)
        value = coerce(attr, op.value, ref.full_path)
    _store(container, attr.name, _without_empty(value))


def _without_stale_ref(
    attr: Attribute, old: Mapping[str, Any], new: dict[str, Any], given: Mapping[str, Any]
) -> dict[str, Any]:
    """A merged complex value whose `value` changed without a new `$ref` loses the old `$ref`: it named the
    previous resource (Entra sets `manager` with `$ref`, then replaces it with a bare id)."""
    if attr.sub("$ref") is not None and "$ref" not in given and new.get("value") != old.get("value"):
        new.pop("$ref", None)
    return new


def _remove_single(container: dict[str, Any], ref: AttrRef) -> None:
    if ref.sub is None:
        container.pop(ref.attr.name, None)
    else:
        _store(container, ref.attr.name, _without(container.get(ref.attr.name) or {}, ref.sub.name))


def _write_list(patch: _Patch, container: dict[str, Any], op: _Op, ref: AttrRef) -> None:
    """The whole multi-valued attribute: add appends the values not already there, replace replaces the
    list, remove unassigns it (RFC 7644 §3.5.2.1-3)."""
    attr = ref.attr
    if op.op == "remove":
        container.pop(attr.name, None)
        return
    new = coerce(attr, op.value, attr.name) or []
    if op.op == "replace":
        _store(container, attr.name, new)
        return
    index = _list_index(patch, container, ref)
    touched = []
    for element in new:
        key = value_key(attr, element)
        if key not in index.keys:
            index.keys.add(key)
            touched.append(len(index.elements))
            index.elements.append(element)
    _settle_indexed_primary(attr, index, touched)
    _store(container, attr.name, index.elements)


def _list_index(patch: _Patch, container: dict[str, Any], ref: AttrRef) -> _ListIndex:
    """The index of the list the document holds now; built (one pass over the list) when there is none yet
    or the list it describes has been replaced since."""
    current = container.get(ref.attr.name)
    index = patch.lists.get(ref.full_path)
    if index is None or current is not index.elements:
        elements = list(current or [])
        container[ref.attr.name] = elements  # the list the index describes is the one in the document
        index = _ListIndex(
            elements,
            {value_key(ref.attr, element) for element in elements},
            {i for i, element in enumerate(elements) if _is_primary(element)},
        )
        patch.lists[ref.full_path] = index
    return index


def _settle_indexed_primary(attr: Attribute, index: _ListIndex, touched: list[int]) -> None:
    """`_settle_primary` for an indexed list: the primary elements are known, so no scan is needed."""
    made_primary = {i for i in touched if _is_primary(index.elements[i])}
    if made_primary:
        for i in index.primaries - made_primary:
            element = index.elements[i]
            index.keys.discard(value_key(attr, element))
            element["primary"] = False
            index.keys.add(value_key(attr, element))
        index.primaries = made_primary
    if len(index.primaries) > 1:
        raise invalid_value(f"{attr.name}: at most one value may be primary (RFC 7643 §2.4)")


def _is_primary(element: Any) -> bool:
    return isinstance(element, dict) and element.get("primary") is True


def _write_elements(container: dict[str, Any], op: _Op, ref: AttrRef) -> None:
    """Elements selected by a value filter (`emails[type eq "work"]`), or every element for `emails.value`."""
    attr = ref.attr
    elements = list(container.get(attr.name) or [])  # the working copy's elements: replaced, never edited
    selected = [i for i, e in enumerate(elements) if op.path.filter is None or matches(op.path.filter, e)]
    if op.op == "remove":
        for i in selected:
            elements[i] = _without(elements[i], ref.sub.name) if ref.sub is not None else {}
    elif selected:
        for i in selected:
            elements[i] = _updated_element(elements[i], op, ref)
    else:
        selected = [len(elements)]
        elements.append(_new_element(op, ref))
    kept = _settle_primary(attr, elements, selected)
    _store(container, attr.name, [element for element in kept if element])


def _updated_element(element: dict[str, Any], op: _Op, ref: AttrRef) -> dict[str, Any]:
    """A selected element after the op: its sub-attribute set, or (add) merged with / (replace) replaced by
    the value (RFC 7644 §3.5.2.1, §3.5.2.3)."""
    if ref.sub is not None:
        updated = {**element, ref.sub.name: coerce(ref.sub, op.value, ref.full_path)}
    elif op.op == "add":
        updated = {**element, **_sub_values(ref.attr, op.value, ref.full_path)}
    else:
        updated = _element(ref.attr, op.value, ref.full_path)
    return _without_empty(updated) or {}


def _new_element(op: _Op, ref: AttrRef) -> dict[str, Any]:
    """The element an unmatched filter describes, with the op's value written into it (Entra, see above)."""
    if is_empty(op.value):  # unassigning what is not there
        return {}
    described = _described_by(op.path.filter, op.where) if op.path.filter is not None else {}
    if ref.sub is not None:
        return _element(ref.attr, {**described, ref.sub.name: op.value}, ref.full_path)
    return {**_element(ref.attr, described, ref.full_path), **_element(ref.attr, op.value, ref.full_path)}


def _element(attr: Attribute, value: Any, path: str) -> dict[str, Any]:
    """One element of a multi-valued complex attribute, coerced; {} when empty."""
    coerced = _coerce_value(attr, value, path)
    return coerced if isinstance(coerced, dict) else {}


def _coerce_value(attr: Attribute, value: Any, path: str) -> Any:
    values = coerce(attr, [value], path)
    return values[0] if values else None


def _sub_values(attr: Attribute, value: Any, path: str) -> dict[str, Any]:
    """Sub-attributes to merge into a complex value; those given as null/empty map to None (unassign them)."""
    emptied: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for key, item in value.items():
            sub = attr.sub(key)
            if sub is not None and sub.mutability != "readOnly" and is_empty(item):
                emptied[sub.name] = None
    coerced = _coerce_value(attr, value, path) if attr.multi_valued else coerce(attr, value, path)
    return {**emptied, **(coerced or {})}


def _described_by(predicate: Predicate, where: str) -> dict[str, Any]:
    """`type eq "work" and primary eq true` -> {"type": "work", "primary": True}."""
    if isinstance(predicate, And):
        return {**_described_by(predicate.left, where), **_described_by(predicate.right, where)}
    if isinstance(predicate, Compare) and predicate.op == "eq" and predicate.value is not None:
        return {predicate.ref.leaf.name: predicate.value}
    raise no_target(f"{where}: no value matches the filter, and it does not describe one to add")


def _settle_primary(
    attr: Attribute, elements: list[dict[str, Any]], touched: list[int]
) -> list[dict[str, Any]]:
    """A value the op made primary takes it from the others (RFC 7644 §3.5.2); more than one is refused."""
    if any(elements[i].get("primary") is True for i in touched):
        for i, element in enumerate(elements):
            if i not in touched and element.get("primary") is True:
                element["primary"] = False
    if sum(1 for element in elements if element.get("primary") is True) > 1:
        raise invalid_value(f"{attr.name}: at most one value may be primary (RFC 7643 §2.4)")
    return elements


def _store(container: dict[str, Any], name: str, value: Any) -> None:
    if is_empty(value):
        container.pop(name, None)
    else:
        container[name] = value


def _without(element: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in element.items() if key != name}


def _without_empty(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if not is_empty(v)} or None
    return value


# ---------------------------------------------------------------- group members


def _member_ops(op: _Op, ref: AttrRef) -> list[MemberOp]:
    """Group membership changes: `add` adds, `replace` empties then adds, `remove` takes the members its
    filter names by id, or all of them without a filter."""
    if ref.sub is not None or (op.path.filter is not None and op.op != "remove"):
        raise invalid_path(
            f"{op.where}: members can be added, replaced, or removed by `value eq`, nothing else"
        )
    if op.op == "remove":
        if op.path.filter is None:
            return [MemberOp("remove_all")]
        return [MemberOp("remove", [Member(value=i, type=None) for i in _member_ids(op.path.filter)])]
    members = members_of(coerce(ref.attr, op.value, "members"))
    ops = [MemberOp("remove_all")] if op.op == "replace" else []
    return ops + ([MemberOp("add", members)] if members else [])


def _member_ids(predicate: Predicate) -> list[str]:
    """The ids of `value eq "a" or value eq "b"`; anything else cannot be applied without loading members."""
    ids: list[str] = []
    pending = [predicate]
    while pending:
        node = pending.pop()
        if isinstance(node, Or):
            pending += [node.right, node.left]
        elif isinstance(node, Compare) and node.op == "eq" and node.ref.leaf.name == "value":
            if isinstance(node.value, str) and node.value not in ids:
                ids.append(node.value)
        else:
            raise invalid_filter(_MEMBER_FILTER_HELP)
    return ids


# ---------------------------------------------------------------- result


def _check_required(patch: _Patch, before: Mapping[str, Any]) -> None:
    """A required attribute that the PATCH unassigned is `mutability` (RFC 7644 §3.5.2.2)."""
    was_missing = set(missing_required(patch.registry, patch.rt, before))
    lost = [name for name in missing_required(patch.registry, patch.rt, patch.doc) if name not in was_missing]
    if lost:
        raise mutability(f"required attribute cannot be removed: {', '.join(lost)}")


def _finish(patch: _Patch, before: Mapping[str, Any]) -> None:
    """Drop emptied extension objects and list every extension that holds data in `schemas`."""
    for urn, _ in patch.rt.extensions:
        if urn in patch.doc and is_empty(patch.doc[urn]):
            del patch.doc[urn]
    declared = before.get("schemas")
    patch.doc["schemas"] = schemas_for(patch.rt, patch.doc, declared if isinstance(declared, list) else [])


def _changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> set[str]:
    """Canonical paths whose value differs: `userName`, `name.familyName`, `emails`, `urn:...:User:manager.value`."""
    changed: set[str] = set()
    for key in (before.keys() | after.keys()) - {"schemas"}:
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key.startswith("urn:"):  # an extension object: report its attributes
            for name in _object(old).keys() | _object(new).keys():
                changed |= _complex_diff(f"{key}:{name}", _object(old).get(name), _object(new).get(name))
        else:
            changed |= _complex_diff(key, old, new)
    return changed


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _complex_diff(path: str, old: Any, new: Any) -> set[str]:
    """A changed singular complex attribute is reported per sub-attribute (`name.familyName`)."""
    if old == new:
        return set()
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        return {f"{path}.{k}" for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return {path}
