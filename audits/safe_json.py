"""JSON from outside, refused when it would break something later: nesting deeper than any
Assay record needs (Python's parser would overflow its stack), lone UTF-16 surrogates (no UTF-8
form, so canonical JSON and the database both fail on them) and NUL characters (PostgreSQL text
cannot hold them). Used by the API's parser, the query-string guard and signed payloads."""

import json
from typing import Any

MAX_DEPTH = 32


class UnsafeJSONError(ValueError):
    """JSON that Assay refuses; the message says what and where."""


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings, found without parsing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def check_text(value: str, where: str) -> None:
    if "\x00" in value:
        raise UnsafeJSONError(f"{where} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSONError(f"{where} contains a lone UTF-16 surrogate") from None


def check_value(value: Any, where: str = "the body") -> None:
    """Every string (keys included) of a parsed JSON value passes check_text."""
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"a key in {where}")
            check_value(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]")


def loads(text: str, *, what: str = "the body", max_depth: int = MAX_DEPTH) -> Any:
    if nesting_depth(text) > max_depth:
        raise UnsafeJSONError(f"{what} nests deeper than {max_depth} levels")
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UnsafeJSONError(f"{what} is not valid JSON: {exc}") from None
    check_value(value, what)
    return value
