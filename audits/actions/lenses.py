"""Lenses (registered, validated or trained by worker jobs) and the feature catalog
(proposed by discovery, reviewed by people, carried to new versions by drift matching)."""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from audits import dispatch, ledger
from audits.errors import ConflictError
from audits.ledger import Verb
from audits.models import CatalogFeature, CheckRun, Lens, ModelVersion


@transaction.atomic
def register_lens(*, actor, model_version: ModelVersion, name: str, source_path: str) -> Lens:
    if Lens.objects.filter(model_version=model_version, name=name).exists():
        raise ConflictError(f"model version {model_version} already has a lens named {name!r}")
    lens = Lens.objects.create(
        model_version=model_version, name=name, source_path=source_path, registered_by=actor
    )
    ledger.record(
        Verb.LENS_REGISTERED,
        actor=actor,
        target=lens,
        data={"model_version": str(model_version.pk), "name": name, "source_path": source_path},
    )
    dispatch.enqueue_lens_validation(lens.pk)
    return lens


@dataclass(frozen=True)
class LensFacts:
    hook_name: str
    architecture: str
    d_in: int
    d_sae: int
    digest: str


@transaction.atomic
def request_lens_training(
    *, actor, model_version: ModelVersion, name: str, target: str, request: dict
) -> Lens:
    """A lens to be trained by a worker job into target (a new directory in the lens store)."""
    if Lens.objects.filter(model_version=model_version, name=name).exists():
        raise ConflictError(f"model version {model_version} already has a lens named {name!r}")
    lens = Lens.objects.create(
        model_version=model_version,
        name=name,
        source_path=target,
        registered_by=actor,
        status=Lens.Status.TRAINING,
        training={"request": request},
    )
    ledger.record(
        Verb.LENS_TRAINING_REQUESTED,
        actor=actor,
        target=lens,
        data={"model_version": str(model_version.pk), "name": name, "request": request},
    )
    dispatch.enqueue_lens_training(lens.pk)
    return lens


@transaction.atomic
def record_lens_validated(*, lens_id, facts: LensFacts, training: dict | None = None) -> bool:
    extra = {"training": training} if training is not None else {}
    updated = Lens.objects.filter(
        pk=lens_id, status__in=(Lens.Status.PENDING, Lens.Status.TRAINING)
    ).update(
        status=Lens.Status.READY,
        hook_name=facts.hook_name,
        architecture=facts.architecture,
        d_in=facts.d_in,
        d_sae=facts.d_sae,
        digest=facts.digest,
        error="",
        **extra,
    )
    if updated:
        ledger.record(
            Verb.LENS_VALIDATED,
            actor=None,
            target=Lens.objects.get(pk=lens_id),
            data={
                "hook_name": facts.hook_name,
                "architecture": facts.architecture,
                "d_in": facts.d_in,
                "d_sae": facts.d_sae,
                "digest": facts.digest,
            },
        )
    return bool(updated)


@transaction.atomic
def record_lens_failed(*, lens_id, reason: str) -> bool:
    updated = Lens.objects.filter(
        pk=lens_id, status__in=(Lens.Status.PENDING, Lens.Status.TRAINING)
    ).update(status=Lens.Status.FAILED, error=reason[:10_000])
    if updated:
        ledger.record(
            Verb.LENS_FAILED,
            actor=None,
            target=Lens.objects.get(pk=lens_id),
            data={"reason": reason[:2000]},
        )
    return bool(updated)


@transaction.atomic
def review_feature(
    *, actor, feature: CatalogFeature, label: str, risk_axis: str, status: str
) -> CatalogFeature:
    """A person confirms, relabels or rejects a catalog feature; who and when are recorded."""
    before = {"label": feature.label, "risk_axis": feature.risk_axis, "status": feature.status}
    CatalogFeature.objects.filter(pk=feature.pk).update(
        label=label,
        risk_axis=risk_axis,
        status=status,
        reviewed_by=actor,
        reviewed_at=timezone.now(),
    )
    feature.refresh_from_db()
    ledger.record(
        Verb.CATALOG_FEATURE_REVIEWED,
        actor=actor,
        target=feature,
        data={
            "lens": str(feature.lens_id),
            "index": feature.index,
            "before": before,
            "after": {"label": label, "risk_axis": risk_axis, "status": status},
        },
    )
    return feature


def propose_features(*, run: CheckRun, lens: Lens, proposals: list[dict]) -> list[CatalogFeature]:
    """Catalog proposals from a discovery run. A feature proposed for several axes keeps the
    axis where it separates best (highest AUROC) until a person reviews it; reviewed features
    are never changed by a machine."""
    changed = []
    for proposal in proposals:
        feature, new = CatalogFeature.objects.get_or_create(
            lens=lens,
            index=proposal["index"],
            defaults={
                "label": proposal["label"],
                "risk_axis": proposal["risk_axis"],
                "evidence": proposal["evidence"],
                "proposed_by_run": run,
            },
        )
        if new or _better_proposal(feature, proposal):
            if not new:
                CatalogFeature.objects.filter(pk=feature.pk).update(
                    label=proposal["label"],
                    risk_axis=proposal["risk_axis"],
                    evidence=proposal["evidence"],
                    proposed_by_run=run,
                )
            changed.append(feature)
    if changed:
        ledger.record(
            Verb.CATALOG_FEATURE_PROPOSED,
            actor=None,
            target=run,
            data={
                "lens": str(lens.pk),
                "features": [f.index for f in changed],
                "risk_axis": proposals[0]["risk_axis"],
            },
        )
    return changed


def _better_proposal(feature: CatalogFeature, proposal: dict) -> bool:
    return feature.status == CatalogFeature.Status.PROPOSED and proposal["evidence"].get(
        "auroc", 0
    ) > feature.evidence.get("auroc", 0)


def carry_features(*, run: CheckRun, new_lens: Lens, matches: list[dict]) -> dict:
    """Carry catalog features to a new lens by drift matching; what did not match is recorded.

    Carried features start as proposals: a person confirms them for the new version."""
    carried, unmatched = [], []
    for match in matches:
        if match["new_index"] is None:
            unmatched.append(
                {
                    "from": str(match["feature"].pk),
                    "index": match["feature"].index,
                    "best_cosine": match["best_cosine"],
                }
            )
            continue
        feature, _ = CatalogFeature.objects.get_or_create(
            lens=new_lens,
            index=match["new_index"],
            defaults={
                "label": match["feature"].label,
                "risk_axis": match["feature"].risk_axis,
                "carried_from": match["feature"],
                "match_cosine": match["cosine"],
                "evidence": {"version_drift_run": str(run.pk)},
                "proposed_by_run": run,
            },
        )
        carried.append(
            {
                "from": str(match["feature"].pk),
                "to": str(feature.pk),
                "index": match["feature"].index,
                "new_index": match["new_index"],
                "cosine": match["cosine"],
            }
        )
    record = {"new_lens": str(new_lens.pk), "carried": carried, "unmatched": unmatched}
    ledger.record(Verb.CATALOG_CARRIED, actor=None, target=run, data=record)
    return record
