"""List filters declared per view: a query parameter a view does not know, or a value it cannot
take, is refused with 400 and the allowed names or values, never silently ignored (a typo in a
filter would otherwise answer with every record)."""

import difflib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from rest_framework.exceptions import ValidationError

PAGINATION = ("limit", "offset")


@dataclass(frozen=True)
class Filter:
    lookup: str
    parse: Callable[[str, str], object]


def as_uuid(name: str, value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError({name: f"{value!r} is not a UUID"}) from None


def one_of(choices) -> Callable[[str, str], str]:
    allowed = sorted(choices)

    def parse(name: str, value: str) -> str:
        if value not in allowed:
            near = difflib.get_close_matches(value, allowed, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise ValidationError(
                {name: f"{value!r} is not allowed; {hint}use one of: {', '.join(allowed)}"}
            )
        return value

    return parse


def text(name: str, value: str) -> str:
    if not value or len(value) > 200:
        raise ValidationError({name: "must be 1 to 200 characters"})
    return value


def apply(queryset, params, filters: dict[str, Filter]):
    """The queryset filtered by the request's query parameters, all of them known."""
    allowed = sorted({*filters, *PAGINATION})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValidationError(
            {
                name: "unknown query parameter"
                + (
                    f"; did you mean {near[0]!r}?"
                    if (near := difflib.get_close_matches(name, allowed, n=1))
                    else ""
                )
                + f" (allowed: {', '.join(allowed)})"
                for name in unknown
            }
        )
    for name, spec in filters.items():
        if name in params:
            queryset = queryset.filter(**{spec.lookup: spec.parse(name, params[name])})
    return queryset
