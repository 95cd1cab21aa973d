"""Each check kind's parameters and thresholds, described for the policy editor from the kind's
own schema (the pydantic models in interp_jobs.checks.<kind>, imported lazily: they are light,
and nothing they import at module level needs torch)."""

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from audits import checkkinds


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    default: str
    required: bool
    constraints: str
    description: str


def _type(spec: dict, defs: dict) -> str:
    if "$ref" in spec:
        return _type(defs.get(spec["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "enum" in spec:
        return " | ".join(repr(v) for v in spec["enum"])
    if "const" in spec:
        return repr(spec["const"])
    if "anyOf" in spec or "oneOf" in spec:
        parts = [_type(s, defs) for s in spec.get("anyOf") or spec.get("oneOf") or []]
        return " | ".join(dict.fromkeys(p for p in parts if p))
    kind = spec.get("type", "")
    if kind == "array":
        return f"list of {_type(spec.get('items') or {}, defs) or 'values'}"
    if kind == "null":
        return "null"
    if kind == "object" and spec.get("properties"):
        return "object (" + ", ".join(spec["properties"]) + ")"
    return str(kind or spec.get("title", ""))


CONSTRAINTS = (
    ("minimum", "≥"),
    ("exclusiveMinimum", ">"),
    ("maximum", "≤"),
    ("exclusiveMaximum", "<"),
    ("minLength", "length ≥"),
    ("maxLength", "length ≤"),
    ("minItems", "items ≥"),
)


def _constraints(spec: dict) -> str:
    found = [f"{word} {spec[key]}" for key, word in CONSTRAINTS if key in spec]
    for option in spec.get("anyOf") or []:
        found += [f"{word} {option[key]}" for key, word in CONSTRAINTS if key in option]
    return ", ".join(dict.fromkeys(found))


def fields(schema: dict) -> list[Field]:
    defs = schema.get("$defs") or {}
    required = set(schema.get("required") or [])
    out = []
    for name, spec in (schema.get("properties") or {}).items():
        default: Any = spec.get("default", None if name in required else "none")
        out.append(
            Field(
                name=name,
                type=_type(spec, defs),
                default="(required)" if name in required else _shown(default),
                required=name in required,
                constraints=_constraints(spec),
                description=str(spec.get("description") or ""),
            )
        )
    return out


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return value if value == "none" else repr(value)
    return str(value).replace("True", "true").replace("False", "false")


@dataclass(frozen=True)
class KindHelp:
    name: str
    description: str
    evidence_kind: str
    parameters: list[Field]
    thresholds: list[Field]


@lru_cache(maxsize=32)
def describe(name: str) -> KindHelp | None:
    try:
        kind = checkkinds.get(name)
    except checkkinds.CheckSpecError:
        return None
    from interp_jobs.checks import check_module

    module = check_module(name)
    return KindHelp(
        name=name,
        description=kind.description,
        evidence_kind=kind.evidence_kind,
        parameters=fields(module.Parameters.model_json_schema()),
        thresholds=fields(module.Thresholds.model_json_schema()),
    )
