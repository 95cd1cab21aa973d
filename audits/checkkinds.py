"""The check kinds a policy may require.

The record system must validate a policy's check parameters without importing the microscope
(and torch), so interp_jobs registers each kind here at start-up with a light validator, the way
apps register models with the admin site.
"""

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Every kind the architecture names; a kind is only usable once an app has registered it.
KNOWN_KINDS = (
    "weights_fingerprint",
    "sae_fidelity",
    "feature_discovery",
    "feature_activation_audit",
    "circuit_trace",
    "feature_intervention",
    "behavior_probe",
    "version_drift",
)


class CheckSpecError(ValueError):
    """Parameters or thresholds that a check kind does not accept; the message says why."""


Validator = Callable[[Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class CheckKind:
    name: str
    description: str
    evidence_kind: str
    validate_parameters: Validator
    validate_thresholds: Validator
    soft_time_limit: int = 1800  # seconds; the run fails with a clear reason past it
    time_limit: int = 1900  # seconds; the worker process is killed past it
    heavy: bool = True  # runs the model: goes to the GPU queue when there is one


_registry: dict[str, CheckKind] = {}


def register(kind: CheckKind) -> None:
    if kind.name not in KNOWN_KINDS:
        raise ValueError(f"unknown check kind {kind.name!r}")
    _registry[kind.name] = kind


def get(name: str) -> CheckKind:
    try:
        return _registry[name]
    except KeyError:
        available = ", ".join(sorted(_registry)) or "none"
        near = difflib.get_close_matches(name, sorted(_registry), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise CheckSpecError(
            f"check kind {name!r} is not available; {hint}available kinds: {available}"
        ) from None


def available() -> list[str]:
    return sorted(_registry)
