"""What a finished check adds to the feature catalog: discovery proposes features, and
version_drift (matched lenses) carries confirmed features to the new model version's lens.

Runs inside the transaction that records the check run
(audits.actions.check_runs.complete_check_run).
"""

import json

from audits import actions
from audits.models import CatalogFeature, CheckRun, Lens, ModelVersion
from interp_jobs.worker.runner import BASELINE_PREFIX


def _lens_named(run: CheckRun, name: str | None) -> Lens | None:
    model_version = run.release.model_version
    owner: ModelVersion | None = model_version
    if name and name.startswith(BASELINE_PREFIX):
        owner, name = model_version.parent, name[len(BASELINE_PREFIX) :]
    lenses = owner.lenses.filter(status=Lens.Status.READY) if owner else Lens.objects.none()
    return lenses.filter(name=name).first() if name else lenses.order_by("name").first()


def _artifact(outcome, title: str) -> dict:
    return json.loads(next(a.data for a in outcome.artifacts if a.title == title))


def _proposals(report: dict) -> list[dict]:
    """Features that met the policy's bars; without bars, those above the shuffled-label
    chance level (the best AUROC any feature reached with the labels shuffled)."""
    chance = max(report.get("chance_best_auroc") or [0.5])
    keep = [
        row
        for row in report["features"]
        if row["meets_bar"] or (row["meets_bar"] is None and row["auroc"] > chance)
    ]
    return [
        {
            "index": row["feature"],
            "risk_axis": report["axis"],
            "label": f"{report['axis']} candidate (AUROC {row['auroc']:.2f} on the prompts it "
            "was ranked on); to be named",
            "evidence": {k: row[k] for k in row if k != "contexts"}
            | {"contexts": row.get("contexts", [])[:3]},
        }
        for row in keep
    ]


def after_discovery(run: CheckRun, outcome) -> None:
    report = _artifact(outcome, "discovery.json")
    lens = _lens_named(run, report["parameters"].get("lens"))
    if lens is not None:
        actions.propose_features(run=run, lens=lens, proposals=_proposals(report))


def after_drift(run: CheckRun, outcome) -> None:
    params = run.required_check.parameters
    if params.get("mode") != "matched_lenses":
        return  # one shared lens: its catalog already applies to both versions
    old_lens, new_lens = _lens_named(run, params["old_lens"]), _lens_named(run, params["new_lens"])
    if old_lens is None or new_lens is None:
        return
    report = _artifact(outcome, "drift.json")
    old = {
        f.index: f
        for f in CatalogFeature.objects.filter(
            lens=old_lens, status=CatalogFeature.Status.CONFIRMED
        )
    }
    matches = [
        {
            "feature": old[row["index"]],
            "new_index": row["new_index"],
            "cosine": row["cosine"],
            "best_cosine": row["best_cosine"],
        }
        for row in report["features"]
        if row["index"] in old
    ]
    actions.carry_features(run=run, new_lens=new_lens, matches=matches)


HANDLERS = {"feature_discovery": after_discovery, "version_drift": after_drift}


def follow_up(outcome):
    """The on_recorded callback for a run of this kind, or None."""

    def apply(run: CheckRun) -> None:
        handler = HANDLERS.get(run.kind)
        if handler is not None:
            handler(run, outcome)

    return apply
