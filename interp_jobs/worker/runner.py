"""Glue between a CheckRun record and a check kind: build the context, run, shape the outcome."""

import importlib.metadata
import platform
from collections.abc import Callable

from django.conf import settings

from audits.actions import Artifact, Outcome
from audits.models import CatalogFeature as CatalogRecord
from audits.models import CheckRun, Lens, ModelVersion
from interp_jobs.checks import check_module
from interp_jobs.checks.base import (
    CatalogFeature,
    CheckContext,
    CheckResult,
    LensRef,
)
from interp_jobs.engine.loading import cache
from interp_jobs.engine.loading.fingerprint import Snapshot
from interp_jobs.engine.reproducibility import numerical_environment
from interp_jobs.worker import binding
from interp_jobs.worker.lens_jobs import model_ref

BASELINE_PREFIX = "parent:"  # how a policy names the parent version's lenses
# Kinds that compare every byte with the registered digests themselves, and must report a
# mismatch as their (failing) evidence rather than be stopped by the binding check.
SELF_VERIFYING_KINDS = frozenset({"weights_fingerprint"})

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


def _lenses(model_version: ModelVersion) -> list[tuple[str, Lens]]:
    """(name in the check's context, lens): this version's ready lenses, then its parent's."""
    named = [(lens.name, lens) for lens in model_version.lenses.filter(status=Lens.Status.READY)]
    if model_version.parent is not None:
        named += [
            (BASELINE_PREFIX + lens.name, lens)
            for lens in model_version.parent.lenses.filter(status=Lens.Status.READY)
        ]
    return named


def _catalog(named: list[tuple[str, Lens]]) -> tuple[CatalogFeature, ...]:
    names = {lens.pk: name for name, lens in named}
    confirmed = CatalogRecord.objects.filter(lens__in=names, status=CatalogRecord.Status.CONFIRMED)
    return tuple(
        CatalogFeature(names[f.lens_id], f.index, f.label, f.risk_axis)
        for f in confirmed.order_by("lens_id", "index")
    )


def build_context(run: CheckRun, progress: Callable, log: Callable) -> CheckContext:
    module = check_module(run.kind)
    required = run.required_check
    model_version = run.release.model_version
    named = _lenses(model_version)
    parameters = module.Parameters.parse(required.parameters, what="parameters")
    return CheckContext(
        model=model_ref(model_version),
        lenses=tuple(
            LensRef(path=lens.source_path, digest=lens.digest, name=name) for name, lens in named
        ),
        catalog=_catalog(named),
        baseline_model=model_ref(model_version.parent) if model_version.parent else None,
        parameters=parameters,
        thresholds=module.Thresholds.parse(required.thresholds, what="thresholds"),
        seed=getattr(parameters, "seed", 0),  # only what the kind's schema validated
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
        # What bit-for-bit reproduction depends on: torch build, threads, BLAS, CPU flags, the
        # deterministic-algorithms setting (a rerun elsewhere can differ in the last digits).
        "numerical_environment": numerical_environment(context.device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": context.device,
        "dtype": context.dtype,
        "seed": context.seed,
        "check": {"key": run.required_check.key, "kind": run.kind, "attempt": run.attempt},
        "parameters": context.parameters.model_dump(mode="json"),
        "thresholds": context.thresholds.model_dump(mode="json"),
        "model": {
            "id": str(model_version.pk),
            "name": str(model_version),
            "weights_digest": model_version.weights_digest,
            "tokenizer_digest": model_version.tokenizer_digest,
            "config_digest": model_version.config_digest,
        },
        "lenses": [
            {"name": ref.name, "path": ref.path, "digest": ref.digest} for ref in context.lenses
        ],
        "catalog": [
            {"lens": f.lens, "index": f.index, "label": f.label, "risk_axis": f.risk_axis}
            for f in context.catalog
        ],
        "policy_digest": run.release.policy_digest,
        **result.provenance,
    }


def _bind(kind: str, context: CheckContext) -> Snapshot:
    """Verify what the check will read against the registered digests (see binding)."""
    if kind in SELF_VERIFYING_KINDS:
        binding.refuse_escaping_links(context.model)
        return {}
    context.progress(0.0, "verifying the registered files")
    return binding.verify_context(context)


def execute(run: CheckRun, progress: Callable, log: Callable) -> Outcome:
    """Run the check of this run; raises engine errors for the task to classify."""
    run = CheckRun.objects.select_related("release__model_version", "required_check").get(pk=run.pk)
    cache.set_budget(settings.ASSAY_WORKER_CACHE_MB << 20)
    context = build_context(run, progress, log)
    with binding.unchanged(_bind(run.kind, context)):
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
