"""Template filters of the dossier: times as a reader wants them, thresholds that are set."""

from django import template

from audits.dossier import render

register = template.Library()


@register.filter
def when(value: str | None) -> str:
    """An ISO 8601 time as "YYYY-MM-DD HH:MM:SS UTC"."""
    return render.when(value)


@register.filter
def given(values: dict) -> list[tuple[str, object]]:
    """The (name, bar) pairs of a thresholds object that are set (not null); a bar on an end
    of the interval ({"at": 0.9, "on": "lower95"}) reads "0.9 on lower95"."""
    return [(name, _bar(value)) for name, value in (values or {}).items() if value is not None]


def _bar(value: object) -> object:
    if isinstance(value, dict) and "at" in value:
        return f"{value['at']} on {value.get('on', 'value')}"
    return value
