"""One line per configuration mistake, from pydantic's error list: `<file>: <section> <key>: <problem>`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from scimjit.config.values import show

_EXPECTED = {
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "missing": "required",
}


def describe_error(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in _EXPECTED:
        text = _EXPECTED[kind]
        return text if kind == "missing" else f"{text}, got {show(error['input'])}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected", "")
        return f"expected {expected.replace(chr(39), chr(34))}, got {show(error['input'])}"
    if kind == "value_error":
        return str((error.get("ctx") or {}).get("error", error["msg"]))
    if kind.startswith(("greater_than", "less_than")):
        return f"{error['msg'].replace('Input should be', 'expected')}, got {show(error['input'])}"
    return str(error["msg"])


def message(exc: ValidationError, document: Mapping[str, Any], source: str, root: type[BaseModel]) -> str:
    """`<source>: <section> <key>: <problem>` for the first error, plus how many more there are."""
    errors = exc.errors()
    first = errors[0]
    loc = list(first["loc"])
    # The `[[applications]]` / `[[jit.policies]]` items are named by their name / group when they have one.
    if loc[:1] == ["applications"] and len(loc) > 1 and isinstance(loc[1], int):
        where = _item(document.get("applications"), loc[1], "name", "[[applications]]")
        rest = loc[2:]
    elif loc[:2] == ["jit", "policies"] and len(loc) > 2 and isinstance(loc[2], int):
        jit = document.get("jit")
        where = _item(
            jit.get("policies") if isinstance(jit, Mapping) else None, loc[2], "group", "[[jit.policies]]"
        )
        rest = loc[3:]
    elif loc and loc[0] in ("server", "jit"):
        where, rest = f"[{loc[0]}]", loc[1:]
    else:
        where, rest = "", loc
    key = ".".join(str(p) for p in rest)
    problem = describe_error(first)
    if first["type"] == "extra_forbidden":
        problem += _known(loc, root)
    line = " ".join(part for part in (where, key) if part)
    line = f"{line}: {problem}" if line else problem
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return f"{source}: {line}" if source else line


def _item(items: Any, index: int, key: str, kind: str) -> str:
    if isinstance(items, list) and index < len(items) and isinstance(items[index], Mapping):
        label = items[index].get(key)
        if isinstance(label, str) and label:
            return f"{kind} {label!r}"
    return f"{kind} #{index + 1}"


def _known(loc: list[Any], root: type[BaseModel]) -> str:
    """`; known keys: …` for an unknown key, from the model at that location."""
    model: Any = root
    for part in loc[:-1]:
        if isinstance(part, int) or not isinstance(model, type) or not issubclass(model, BaseModel):
            continue
        info = model.model_fields.get(str(part))
        if info is None:
            return ""
        model = _inner_model(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return "; known keys: " + ", ".join(sorted(model.model_fields))
    return ""


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None
