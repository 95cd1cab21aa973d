"""Glue between a CheckRun record and a check kind: build the context, run, shape the outcome."""

import importlib.metadata
import platform
from collections.abc import Callable

from django.conf import settings

from audits.actions import Artifact, Outcome
from audits.models import CheckRun
from interp_jobs.checks import check_module, resources
from interp_jobs.checks.base import CheckContext, CheckResult, ModelRef

ENGINE_VERSION = "1"
PROVENANCE_PACKAGES = ("assay", "torch", "transformers", "sae-lens", "gguf", "safetensors")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in PROVENANCE_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_context(run: CheckRun, progress: Callable, log: Callable) -> CheckContext:
    module = check_module(run.kind)
    required = run.required_check
    model_version = run.release.model_version
    return CheckContext(
        model=ModelRef(
            path=model_version.source_path, format=model_version.format,
            weights_digest=model_version.weights_digest,
            file_digests=dict(model_version.file_digests),
        ),
        parameters=module.Parameters.parse(required.parameters, what="parameters"),
        thresholds=module.Thresholds.parse(required.thresholds, what="thresholds"),
        seed=int(required.parameters.get("seed", 0)),
        device=settings.ASSAY_DEVICE,
        dtype=settings.ASSAY_DTYPE,
        progress=progress,
        log=log,
    )


def provenance(run: CheckRun, context: CheckContext, result: CheckResult) -> dict:
    model_version = run.release.model_version
    return {
        "engine_version": ENGINE_VERSION,
        "libraries": library_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": context.device,
        "dtype": context.dtype,
        "seed": context.seed,
        "check": {"key": run.required_check.key, "kind": run.kind, "attempt": run.attempt},
        "parameters": context.parameters.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "model": {
            "id": str(model_version.pk), "name": str(model_version),
            "weights_digest": model_version.weights_digest,
            "tokenizer_digest": model_version.tokenizer_digest,
            "config_digest": model_version.config_digest,
        },
        "policy_digest": run.release.policy_digest,
        **result.provenance,
    }


def execute(run: CheckRun, progress: Callable, log: Callable) -> Outcome:
    """Run the check of this run; raises engine errors for the task to classify."""
    run = CheckRun.objects.select_related(
        "release__model_version", "required_check"
    ).get(pk=run.pk)
    resources.set_budget(settings.ASSAY_WORKER_CACHE_MB << 20)
    context = build_context(run, progress, log)
    result = check_module(run.kind).run(context)
    return Outcome(
        verdict=result.verdict,
        metrics=result.metrics,
        summary=result.summary,
        provenance=provenance(run, context, result),
        artifacts=tuple(
            Artifact(item.title, item.media_type, result.evidence_kind, item.data)
            for item in result.artifacts
        ),
    )
