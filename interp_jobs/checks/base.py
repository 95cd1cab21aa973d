"""What every check kind shares: its context, its result, and parameter validation.

Nothing here imports Django: a check is callable as a library, and interp_jobs.worker.runner
connects it to the records.
"""

import difflib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from interp_jobs.engine.errors import PermanentEngineError

OBSERVED = "observed"
ATTRIBUTION = "attribution"
INTERVENTION = "intervention"
INTEGRITY = "integrity"

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


class CheckParameterError(PermanentEngineError):
    """Parameters or thresholds a check does not accept."""


class CheckCancelled(Exception):
    """The run was cancelled (or taken over) while the check was working."""


class Spec(BaseModel):
    """Base of every Parameters and Thresholds schema: unknown keys are errors, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, data: Mapping[str, Any], *, what: str) -> "Spec":
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(cls._problem(err, what) for err in exc.errors())
            raise CheckParameterError(problems) from None

    @classmethod
    def _problem(cls, err, what: str) -> str:
        """One validation problem in words, with the nearest valid name for a typo."""
        where = f"{what}.{'.'.join(str(p) for p in err['loc']) or '(root)'}"
        if err["type"] != "extra_forbidden":
            return f"{where}: {err['msg']}"
        known = sorted(cls.model_fields)
        near = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"{where}: unknown key{hint} (known: {', '.join(known) or 'none'})"


@dataclass(frozen=True)
class ModelRef:
    path: str
    format: str
    weights_digest: str
    file_digests: Mapping[str, str]
    name: str = ""


@dataclass(frozen=True)
class LensRef:
    """A lens (SAE or transcoder) in SAELens's on-disk format, registered for the model."""

    path: str
    digest: str = ""
    name: str = ""


@dataclass(frozen=True)
class CatalogFeature:
    """A labelled feature of a lens: what the audit, intervention and drift checks look at."""

    lens: str  # LensRef.name
    index: int
    label: str
    risk_axis: str


def _ignore_progress(fraction: float, stage: str) -> None:
    return None


def _ignore_log(line: str) -> None:
    return None


P = TypeVar("P", bound=Spec)
T = TypeVar("T", bound=Spec)


@dataclass(frozen=True)
class CheckContext(Generic[P, T]):
    """What a check reads: the model, its lenses and catalog, and the validated parameters and
    thresholds of the check kind (CheckContext[Parameters, Thresholds] in each kind's module)."""

    model: ModelRef
    parameters: P
    thresholds: T
    lenses: tuple[LensRef, ...] = ()
    catalog: tuple[CatalogFeature, ...] = ()
    # version_drift compares the model under test with this earlier version.
    baseline_model: ModelRef | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    progress: Callable[[float, str], None] = _ignore_progress
    log: Callable[[str], None] = _ignore_log


@dataclass(frozen=True)
class ArtifactData:
    title: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class CheckResult:
    verdict: str
    evidence_kind: str
    metrics: dict[str, Any]
    summary: str
    artifacts: tuple[ArtifactData, ...]
    provenance: dict[str, Any] = field(default_factory=dict)


SIGNIFICANT_DIGITS = 6


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # JSON has no NaN or infinity; say it in words
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {str(key): _rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(item) for item in value]
    return value


def evidence_json(value: Any) -> bytes:
    """Deterministic JSON for evidence: sorted keys, floats to 6 significant digits.

    Rounding keeps the bytes identical across runs whose floating-point sums differ only in
    the last bits (thread scheduling), so the same inputs and seed give byte-identical evidence.
    """
    return json.dumps(_rounded(value), indent=2, sort_keys=True, ensure_ascii=False).encode()
