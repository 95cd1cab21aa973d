"""One module per check kind. Each module defines DESCRIPTION, EVIDENCE_KIND, Parameters,
Thresholds (Spec schemas) and run(context) -> CheckResult."""

from importlib import import_module
from types import ModuleType

CHECK_MODULES = {
    "weights_fingerprint": "interp_jobs.checks.weights_fingerprint",
    "sae_fidelity": "interp_jobs.checks.sae_fidelity",
    "feature_discovery": "interp_jobs.checks.feature_discovery",
    "feature_activation_audit": "interp_jobs.checks.feature_activation_audit",
    "behavior_probe": "interp_jobs.checks.behavior_probe",
    "circuit_trace": "interp_jobs.checks.circuit_trace",
    "feature_intervention": "interp_jobs.checks.feature_intervention",
    "version_drift": "interp_jobs.checks.version_drift",
}


def check_module(kind: str) -> ModuleType:
    from interp_jobs.checks.base import CheckParameterError

    if kind not in CHECK_MODULES:
        raise CheckParameterError(f"check kind {kind!r} is not implemented by this worker")
    return import_module(CHECK_MODULES[kind])


def _validator(spec, what: str):
    from audits.checkkinds import CheckSpecError
    from interp_jobs.checks.base import CheckParameterError

    def validate(data) -> dict:
        try:
            return spec.parse(data, what=what).model_dump(mode="json")
        except CheckParameterError as exc:
            raise CheckSpecError(str(exc)) from None

    return validate


def register_all() -> None:
    """Tell the record system which kinds exist, how to validate their parameters, and how
    long they may run (a module's SOFT_TIME_LIMIT, else ASSAY_CHECK_SOFT_TIME_LIMIT)."""
    from django.conf import settings

    from audits import checkkinds

    for kind in CHECK_MODULES:
        module = check_module(kind)
        soft = getattr(module, "SOFT_TIME_LIMIT", settings.ASSAY_CHECK_SOFT_TIME_LIMIT)
        checkkinds.register(
            checkkinds.CheckKind(
                name=kind,
                description=module.DESCRIPTION,
                evidence_kind=module.EVIDENCE_KIND,
                validate_parameters=_validator(module.Parameters, "parameters"),
                validate_thresholds=_validator(module.Thresholds, "thresholds"),
                soft_time_limit=soft,
                time_limit=soft + max(60, soft // 10),
                heavy=getattr(module, "HEAVY", True),
            )
        )
