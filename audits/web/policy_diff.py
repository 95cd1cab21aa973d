"""What changed between two versions of a policy, in words and line by line."""

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

FIELDS = ("description", "approvals_required", "approver_role", "submitter_may_approve")


@dataclass(frozen=True)
class Change:
    what: str
    before: str
    after: str


@dataclass
class PolicyDiff:
    fields: list[Change] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, list[Change]] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)  # (kind, text): +, -, space, @

    @property
    def empty(self) -> bool:
        return not (self.fields or self.added or self.removed or self.changed)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value or "(empty)"
    return json.dumps(value, sort_keys=True)


def _check_changes(before: dict, after: dict) -> list[Change]:
    changes = [
        Change(name, _text(before.get(name)), _text(after.get(name)))
        for name in ("kind", "blocking")
        if before.get(name) != after.get(name)
    ]
    for part in ("parameters", "thresholds"):
        old, new = before.get(part) or {}, after.get(part) or {}
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                changes.append(
                    Change(
                        f"{part}.{key}",
                        _text(old[key]) if key in old else "(absent)",
                        _text(new[key]) if key in new else "(absent)",
                    )
                )
    return changes


def diff(before: dict, after: dict) -> PolicyDiff:
    """before, after: CheckPolicy.content() of two versions."""
    result = PolicyDiff()
    for name in FIELDS:
        if before.get(name) != after.get(name):
            result.fields.append(Change(name, _text(before.get(name)), _text(after.get(name))))
    old = {c["key"]: c for c in before.get("required_checks") or []}
    new = {c["key"]: c for c in after.get("required_checks") or []}
    result.added = sorted(set(new) - set(old))
    result.removed = sorted(set(old) - set(new))
    for key in sorted(set(old) & set(new)):
        changes = _check_changes(old[key], new[key])
        if changes:
            result.changed[key] = changes
    result.lines = _lines(before, after)
    return result


def _pretty(content: dict) -> list[str]:
    shown = {k: v for k, v in content.items() if k != "version"}
    return json.dumps(shown, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _lines(before: dict, after: dict) -> list[tuple[str, str]]:
    out = []
    for line in difflib.unified_diff(_pretty(before), _pretty(after), lineterm="", n=2):
        if line.startswith(("---", "+++")):
            continue
        kind = line[:1] if line[:1] in "+-@" else " "
        out.append((kind, line))
    return out
