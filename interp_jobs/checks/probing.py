"""Parameters shared by the check kinds that read probe sets (discovery, audit, behaviour,
interventions, drift): which probe set, the seed of any sampling, the batch size, and one rule
for validating the axes a policy names."""

from pydantic import Field

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
