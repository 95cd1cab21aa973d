"""One module per check kind. Each module defines DESCRIPTION, EVIDENCE_KIND, Parameters,
Thresholds (Spec schemas) and run(context) -> CheckResult."""

from importlib import import_module
from types import ModuleType

CHECK_MODULES = {
    "weights_fingerprint": "interp_jobs.checks.weights_fingerprint",
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
    """Tell the record system which kinds exist and how to validate their parameters."""
    from audits import checkkinds

    for kind in CHECK_MODULES:
        module = check_module(kind)
        checkkinds.register(checkkinds.CheckKind(
            name=kind, description=module.DESCRIPTION, evidence_kind=module.EVIDENCE_KIND,
            validate_parameters=_validator(module.Parameters, "parameters"),
            validate_thresholds=_validator(module.Thresholds, "thresholds"),
        ))
