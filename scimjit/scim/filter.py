"""SCIM filter text -> the typed predicate tree (RFC 7644 §3.4.2.2), resolved and checked against the schema.

Lexing and parsing use scim2-filter-parser's grammar, with three of its defects repaired here, once:

* precedence: it gives `and` and `or` the same precedence, so `a or b and c` parsed as `(a or b) and c`;
  `_Parser` reuses its grammar rules with `not` > `and` > `or`, as RFC 7644 §3.4.2.2 orders them;
* literals: it lexes numbers one digit at a time, keeps JSON escapes inside strings and gives `true` and
  `"true"` the same text; `_Lexer` reads JSON numbers and strings and types `true` / `false` / `null`, so a
  value keeps the type the client wrote until it is checked against the attribute's type;
* keywords: `true` / `false` / `null` (any case) no longer eat the start of a name such as `nullable`.

Multi-valued comparisons are normalised into `ValuePath` (see `scim.predicate`): `emails.value eq "x"`,
`emails co "x"` (a multi-valued complex attribute without a sub-attribute means its `value`) and
`emails[type eq "work"].value co "x"` all become "some element satisfies ...". Presence and null tests of the
attribute as a whole (`emails pr`, `emails eq null`) stay comparisons on the attribute: "has some value".
`x eq null` / `x ne null` are kept as `Compare(x, "eq" | "ne", None)`: absent / present.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser
from sly import Parser

from scimjit.scim.errors import ScimError, invalid_filter
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate, ValuePath
from scimjit.scim.resource import parse_datetime
from scimjit.scim.schema import Attribute, AttrRef, Registry, ResourceType, UnknownAttribute

SCHEMAS = Attribute(
    "schemas", "reference", multi_valued=True, case_exact=True, mutability="readOnly", returned="always"
)
"""`schemas` is no schema's attribute, yet RFC 7644 §3.4.2.2 filters on it (`schemas eq "urn:..."`)."""

_ORDERING = frozenset({"gt", "ge", "lt", "le"})
_SUBSTRING = frozenset({"co", "sw", "ew"})
_STRING_TYPES = frozenset({"string", "reference", "binary"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_INT64 = 2**63


def parse_filter(
    registry: Registry,
    rt: ResourceType,
    text: str,
    *,
    within: AttrRef | None = None,
    max_length: int = 4096,
    max_depth: int = 32,
    max_terms: int = 50,
) -> Predicate:
    """Parse `text` into a predicate over `rt`, or raise `ScimError` 400 `invalidFilter`; never anything else.

    `within` (a complex, usually multi-valued attribute) resolves names as its sub-attributes, for the filter
    inside a PATCH value path (`emails[type eq "work"]`); the result then names sub-attributes of `within`
    directly, with no `ValuePath` around it. `max_depth` bounds nesting: each parenthesised group, `not(...)`,
    `[...]` and each change between `and` and `or` is a level. `max_terms` bounds the comparisons
    (`attr op value`, `attr pr`), which is what a filter's SQL costs: each is a predicate over every candidate
    row, and a 4 KB filter holds about 200 of them.
    """
    if not isinstance(text, str):
        raise invalid_filter("the filter must be a string")
    if len(text) > max_length:
        raise invalid_filter(f"the filter is longer than {max_length} characters")
    if not text.strip():
        raise invalid_filter("the filter is empty")
    return _Converter(registry, rt, within, max_depth, _TermCount(max_terms)).node(_syntax_tree(text), 1)


# ---------------------------------------------------------------- lexing and parsing


def _token_rule(pattern: str, convert: Callable[[str], Any]) -> Callable[[Any, Any], Any]:
    """A sly token rule that replaces the token's text with its typed value."""

    def rule(self: Any, token: Any) -> Any:
        token.value = convert(token.value)
        return token

    rule.pattern = pattern  # type: ignore[attr-defined]  # how sly finds a rule's regular expression
    return rule


def _string(literal: str) -> str:
    """A JSON string literal; NUL and lone surrogates are refused because no database column can hold them."""
    try:
        value: str = json.loads(literal, strict=False)
        value.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        raise invalid_filter(f"invalid string {literal}") from None
    if "\x00" in value:
        raise invalid_filter(f"invalid string {literal}: NUL characters are not allowed")
    return value


_KEYWORD_END = r"(?![A-Za-z0-9_$-])"


class _Lexer(SCIMLexer):
    """scim2-filter-parser's lexer with JSON literals: typed numbers, strings, true, false and null."""

    tokens = SCIMLexer.tokens
    NUMBER = _token_rule(_NUMBER.pattern, json.loads)
    COMP_VALUE = _token_rule(r'"(?:[^"\\]|\\.)*"', _string)
    TRUE = _token_rule(r"(?i:true)" + _KEYWORD_END, lambda _: True)
    FALSE = _token_rule(r"(?i:false)" + _KEYWORD_END, lambda _: False)
    NULL = _token_rule(r"(?i:null)" + _KEYWORD_END, lambda _: None)

    def error(self, token: Any) -> None:
        raise invalid_filter(f"unexpected character {token.value[0]!r} at position {token.index + 1}")


class _Parser(Parser):
    """scim2-filter-parser's grammar rules, rebuilt with RFC 7644 precedence."""

    tokens = SCIMParser.tokens
    precedence = (("left", "OR"), ("left", "AND"), ("right", "NOT"))
    start = "filter"
    filter = SCIMParser.filter
    value_path = SCIMParser.value_path
    attr_exp = SCIMParser.attr_exp
    log_exp = SCIMParser.log_exp
    comp_value = SCIMParser.comp_value
    attr_path = SCIMParser.attr_path
    sub_attr = SCIMParser.sub_attr

    def error(self, token: Any) -> None:
        if token is None:
            raise invalid_filter("the filter ends too early")
        raise invalid_filter(f"unexpected {json.dumps(token.value)} at position {token.index + 1}")


# The filter IdPs send before every create, `userName eq "..."` (Entra, Okta; `externalId eq`, `displayName eq`
# for groups), and its kin with one sub-attribute and another comparison (`name.familyName sw "Sm"`,
# `emails.value co "@example.com"`): a name, perhaps `.sub`, an operator, one JSON string. Its syntax tree is
# built directly (the same tree the parser builds, then converted by the same code), skipping the general lexer
# and LALR parser, which cost a quarter of that request. Anything else, including a keyword in a name's place,
# goes to the parser.
_NAME = r"[A-Za-z][A-Za-z0-9_$-]*"
_SIMPLE = re.compile(
    rf'[ \t]*({_NAME})(?:\.({_NAME}))?[ \t]+((?i:eq|ne|co|sw|ew|gt|ge|lt|le))[ \t]+("(?:[^"\\]|\\.)*")[ \t]*'
)
_KEYWORDS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le", "pr", "and", "or", "not"})
_KEYWORDS |= {"true", "false", "null"}


def _syntax_tree(text: str) -> Any:
    simple = _SIMPLE.fullmatch(text)
    if (
        simple is not None
        and simple[1].lower() not in _KEYWORDS
        and (simple[2] or "").lower() not in _KEYWORDS
    ):
        name, sub, op, value = simple.groups()
        path = ast.AttrPath(name, None if sub is None else ast.SubAttr(sub), None)
        return ast.Filter(ast.AttrExpr(op, path, ast.CompValue(_string(value))), False, None)
    try:
        tree = _Parser().parse(iter(list(_Lexer().tokenize(text))))
    except ScimError:
        raise
    except Exception as exc:  # the library raises assorted types on odd input; none may become a 500
        raise invalid_filter(f"invalid filter: {exc}") from None
    return tree


# ---------------------------------------------------------------- syntax tree -> predicate


class _TermCount:
    """The comparisons seen so far, shared by a converter and those of its value filters."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    def add(self) -> None:
        self.seen += 1
        if self.seen > self.limit:
            raise invalid_filter(
                f"the filter has more than {self.limit} comparisons, the server's limit (filter_max_terms); "
                "split it into several requests"
            )


class _Converter:
    """Walks scim2-filter-parser's syntax tree, resolving names and typing values as it goes."""

    def __init__(
        self, registry: Registry, rt: ResourceType, within: AttrRef | None, max_depth: int, terms: _TermCount
    ) -> None:
        self.registry = registry
        self.rt = rt
        self.within = within
        self.max_depth = max_depth
        self.terms = terms

    def node(self, node: Any, depth: int) -> Predicate:
        if depth > self.max_depth:
            raise invalid_filter(f"the filter is nested deeper than {self.max_depth} levels")
        if isinstance(node, ast.Filter):
            return self._filter(node, depth)
        if isinstance(node, ast.LogExpr):
            return self._logical(node, depth)
        return self._attr_expr(node, depth)

    def _filter(self, node: Any, depth: int) -> Predicate:
        if node.namespace is not None:
            predicate = self._value_filter(node.namespace, node.expr, None, depth + 1)
        else:
            grouped = isinstance(node.expr, ast.Filter)  # parentheses, or the wrapper of a value filter
            predicate = self.node(node.expr, depth + 1 if grouped else depth)
        return Not(predicate) if node.negated else predicate

    def _logical(self, node: Any, depth: int) -> Predicate:
        """A run of one operator (`a or b or c ...`, which can be long) is gathered without recursion and
        rebuilt as a balanced tree, so whoever walks the predicate recurses only as deep as its nesting."""
        op = node.op.lower()
        operands: list[Predicate] = []
        pending = [node]
        while pending:
            item = pending.pop()
            if _is_plain_wrapper(item) and isinstance(item.expr, ast.LogExpr):
                item = item.expr
            if isinstance(item, ast.LogExpr) and item.op.lower() == op:
                pending += [item.expr2, item.expr1]
            else:
                operands.append(self.node(item, depth + 1))
        return _balanced(And if op == "and" else Or, operands)

    def _attr_expr(self, node: Any, depth: int) -> Predicate:
        self.terms.add()
        op = node.value.lower()
        value = None if node.comp_value is None else node.comp_value.value
        path = node.attr_path
        if isinstance(path.attr_name, ast.Filter):  # emails[type eq "work"].value co "x"
            value_filter = path.attr_name
            return self._value_filter(value_filter.namespace, value_filter.expr, (op, value), depth + 1)
        return self._comparison(self._resolve(path), op, value)

    def _value_filter(
        self, namespace: Any, inner_node: Any, trailing: tuple[str, Any] | None, depth: int
    ) -> Predicate:
        """`attr[inner]`, optionally followed by `.sub op value` (the form PATCH paths use)."""
        if self.within is not None or not isinstance(namespace.attr_name, str):
            raise invalid_filter("a value filter [...] cannot contain or follow another value filter")
        parent = self._resolve_parts(namespace.uri, namespace.attr_name, None)
        if parent.attr.type != "complex":
            raise invalid_filter(f"{parent.full_path} is not complex: [...] filters its sub-attributes")
        sub_name = namespace.sub_attr.value if namespace.sub_attr is not None else None
        if trailing is None and sub_name is not None:
            raise invalid_filter(
                f"{parent.full_path}.{sub_name}[...]: the filter belongs after the attribute"
            )
        inner = _Converter(self.registry, self.rt, parent, self.max_depth, self.terms).node(inner_node, depth)
        if trailing is not None:
            inner = And(inner, self._element_comparison(parent, sub_name, *trailing))
        return ValuePath(parent, inner) if parent.attr.multi_valued else inner

    def _comparison(self, ref: AttrRef, op: str, value: Any) -> Predicate:
        attr = ref.attr
        if self.within is not None or not attr.multi_valued:
            return _compare(ref, op, value)
        if ref.sub is not None:  # emails.value eq "x": some element's value
            return ValuePath(_whole(ref), _compare(ref, op, value))
        if attr.type == "complex" and op != "pr" and value is not None:  # emails co "x": some element's value
            return ValuePath(ref, self._element_comparison(ref, None, op, value))
        return _compare(ref, op, value)  # has / has no values, or a multi-valued simple attribute

    def _element_comparison(self, parent: AttrRef, sub_name: str | None, op: str, value: Any) -> Compare:
        sub = parent.attr.sub(sub_name or "value")
        if sub is None:
            wanted = (
                f"{parent.attr.name}.{sub_name}" if sub_name else f"a sub-attribute of {parent.attr.name}"
            )
            raise invalid_filter(f"unknown sub-attribute: name {wanted}")
        return _compare(AttrRef(parent.schema, parent.attr, sub, parent.extension), op, value)

    def _resolve(self, path: Any) -> AttrRef:
        sub_name = path.sub_attr.value if path.sub_attr is not None else None
        if self.within is None:
            if path.uri is None and sub_name is None and path.attr_name.lower() == "schemas":
                return AttrRef("", SCHEMAS)
            return self._resolve_parts(path.uri, path.attr_name, sub_name)
        parent = self.within.attr
        sub = parent.sub(path.attr_name) if path.uri is None and sub_name is None else None
        if sub is None:
            raise invalid_filter(f"inside {parent.name}[...] name a sub-attribute of {parent.name}")
        return AttrRef(self.within.schema, parent, sub, self.within.extension)

    def _resolve_parts(self, uri: str | None, name: str, sub_name: str | None) -> AttrRef:
        try:
            return self.registry.resolve_parts(self.rt, uri, name, sub_name)
        except UnknownAttribute as exc:
            raise invalid_filter(str(exc)) from None


def _is_plain_wrapper(node: Any) -> bool:
    """The grammar wraps every operand in a `Filter`; a plain one is no group, negation or value filter."""
    return isinstance(node, ast.Filter) and node.namespace is None and not node.negated


def _balanced(make: Callable[[Predicate, Predicate], Predicate], items: Sequence[Predicate]) -> Predicate:
    if len(items) == 1:
        return items[0]
    middle = len(items) // 2
    return make(_balanced(make, items[:middle]), _balanced(make, items[middle:]))


def _whole(ref: AttrRef) -> AttrRef:
    return AttrRef(ref.schema, ref.attr, None, ref.extension)


# ---------------------------------------------------------------- one comparison


def _compare(ref: AttrRef, op: str, value: Any) -> Compare:
    attr, name = ref.leaf, ref.full_path
    if attr.returned == "never":
        raise invalid_filter(f"{name} cannot be used in a filter")
    if op == "pr":
        return Compare(ref, op)
    if value is None:
        if op not in ("eq", "ne"):
            raise invalid_filter(f"null can only be compared with eq or ne, not {op}")
        return Compare(ref, op)
    if attr.type == "complex":
        raise invalid_filter(f"{name} is complex: compare one of its sub-attributes ({name}.x {op} ...)")
    if op in _ORDERING and attr.type in ("boolean", "binary"):
        raise invalid_filter(f"{name} is {attr.type}: {op} does not apply to it (RFC 7644 §3.4.2.2)")
    if op in _SUBSTRING and attr.type not in _STRING_TYPES:
        raise invalid_filter(f"{name} is {attr.type}: {op} applies to strings only")
    coerced = _coerce(attr.type, value)
    if coerced is None:
        raise invalid_filter(f"{name} is {attr.type}: {json.dumps(value)} is not a valid {attr.type} value")
    return Compare(ref, op, coerced)


def _coerce(attr_type: str, value: Any) -> Any:
    """The comparison value as the attribute's type, or None when it is not one (JSON literals and their
    quoted spellings are both taken for booleans and numbers: IdPs send `"True"`)."""
    if attr_type in _STRING_TYPES:
        return value if isinstance(value, str) else None
    if attr_type == "boolean":
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return value if isinstance(value, bool) else None
    if attr_type == "dateTime":
        return _datetime(value)
    if isinstance(value, bool):
        return None
    if attr_type == "integer":
        return _integer(value)
    if attr_type == "decimal":
        return _decimal(value)
    return None


def _datetime(value: Any) -> datetime | None:
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except OverflowError:  # 9999-12-31T23:59:59-05:00 is past the last datetime once in UTC
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and -_INT64 <= value < _INT64 else None


def _decimal(value: Any) -> float | int | None:
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = json.loads(value)
    if isinstance(value, int) and -_INT64 <= value < _INT64:
        return value
    return value if isinstance(value, float) and math.isfinite(value) else None
