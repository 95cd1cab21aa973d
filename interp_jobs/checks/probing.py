"""Parameters shared by the check kinds that read probe sets (discovery, audit, behaviour,
interventions, drift): which probe set, the seed of any sampling, the batch size, one rule for
validating the axes a policy names, which split of the probe set a kind reads, and thresholds
that may sit on an end of an interval (``float | Bar``, see checks/bars.py)."""

from typing import Annotated

from pydantic import AfterValidator, Field

from interp_jobs.checks.bars import Bar, as_bar
from interp_jobs.checks.base import Spec


class ProbeParameters(Spec):
    probe_set: str = Field("v1", description="probe set version (interp_jobs/probes/<version>)")
    seed: int = Field(0, description="seed of every sample drawn from the probe set")
    batch_size: int = Field(8, ge=1, le=512)

    def known_axes(self, *, risk_only: bool) -> tuple[str, ...]:
        """The probe set's axes (only its risk axes with risk_only). A ProbeSetError (a
        ValueError, so pydantic reports it) names the versions there are."""
        from interp_jobs.probes import load_probe_set

        probe_set = load_probe_set(self.probe_set)
        return probe_set.risk_axes if risk_only else probe_set.axes

    def check_axes(self, name: str, axes, *, risk_only: bool) -> None:
        """Refuse axes the probe set does not have, naming the ones it does."""
        known = self.known_axes(risk_only=risk_only)
        unknown = [axis for axis in axes or () if axis not in known]
        if unknown:
            kind = "risk axes" if risk_only else "axes"
            raise ValueError(
                f"{name} {unknown} are not {kind} of probe set {self.probe_set}; "
                f"use some of: {', '.join(known)}"
            )

    def has_splits(self) -> bool:
        """Whether the probe set has fixed discovery / confirmation / audit splits (v2 on)."""
        from interp_jobs.probes import load_probe_set

        return bool(load_probe_set(self.probe_set).prompts[0].split)

    def load_split(self, axes=None, *, split: str):
        """The probe set's prompts of one split (every prompt of a version without splits,
        such as v1, which evidence must then say is not held out)."""
        from interp_jobs.probes import load_probe_set

        return load_probe_set(self.probe_set, axes, split=split if self.has_splits() else None)


def split_note(probe_set, split: str) -> dict:
    """What evidence records about the split a check read."""
    held_out = bool(probe_set.splits)
    return {
        "split": split if held_out else None,
        "digest": probe_set.digest,
        "held_out": held_out,
        "note": (
            f"only the {split} split of probe set {probe_set.version}; the digest covers the "
            "split selection"
            if held_out
            else f"probe set {probe_set.version} has no splits: every prompt was read, "
            "nothing is held out"
        ),
    }


def _bar_between(low: float, high: float):
    def check(bar):
        if bar is not None and not low <= as_bar(bar).at <= high:
            raise ValueError(f"a bar must lie between {low:g} and {high:g}")
        return bar

    return AfterValidator(check)


# A threshold on a rate: a plain number bars the value; {"at": 0.9, "on": "lower95"} bars an
# end of its 95 % interval.
RateBar = Annotated[float | Bar | None, _bar_between(0.0, 1.0)]
AurocBar = Annotated[float | Bar | None, _bar_between(0.5, 1.0)]
EffectBar = Annotated[float | Bar | None, _bar_between(0.0, float("inf"))]
