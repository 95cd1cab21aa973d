"""What the demo found, as data: ``var/demo/findings.json``.

Every figure the README's demo section states comes from here, and every figure here comes
from a check run's stored evidence (read back through ``Evidence.read_bytes``, which re-checks
its sha256), with the run's manifest digest next to it, so a reader can trace a sentence of the
README to the signed evidence it rests on. ``python -m demo.readme_findings`` renders the
README's section from this file; tests/integration/test_demo_findings.py recomputes the cheap
parts.

Shape (``schema`` names its version): ``models`` (base and tuned, with the adapter's record),
``lens`` (fidelity), ``discovery``, ``catalog``, ``behaviour`` / ``audit`` / ``intervention``
per version (``base``, ``tuned``), ``drift``, ``gate``, ``checks`` (verdict and manifest digest
of every run), ``timings`` (the demo's stages) and ``environment`` (what the numbers'
reproducibility depends on: engine/reproducibility.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "assay-demo-findings/1"
VERSIONS = ("base", "tuned")


def _evidence(run, title: str) -> dict | None:
    item = run.evidence.filter(title=title).first()
    return json.loads(item.read_bytes()) if item else None


def _runs(release) -> dict:
    from audits import queries

    return {run.required_check.key: run for run in queries.counting_runs(release)}


def _lens_review(release) -> Any:
    from audits.models import Release

    return (
        Release.objects.filter(
            model_version=release.model_version.parent or release.model_version,
            policy__name="lens-review",
        )
        .order_by("-opened_at")
        .first()
    )


def collect(
    baseline, release, *, timings: list[dict] | None = None, adapter_record: dict | None = None
) -> dict:
    """The findings of one demo run: ``baseline`` is the base version's evaluation,
    ``release`` the tuned version's release; ``adapter_record`` the training record of the
    adapter merged into it, when it is not the shipped one (--adapter, or trained here)."""
    from audits import gate, queries
    from interp_jobs.engine.reproducibility import numerical_environment
    from interp_jobs.worker.runner import library_versions

    runs = {"base": _runs(baseline), "tuned": _runs(release)}
    review = _lens_review(release)
    review_runs = _runs(review) if review else {}
    answer = gate.evaluate(queries.gate_facts(release))
    return {
        "schema": SCHEMA,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": _models(baseline, release, adapter_record),
        "lens": _fidelity(review_runs.get("lens-fidelity"), runs["tuned"].get("lens-fidelity")),
        "discovery": _discovery(review_runs),
        "catalog": _catalog(baseline),
        "behaviour": {v: _behaviour(runs[v].get("refusal-behaviour")) for v in VERSIONS},
        "audit": {v: _audit(runs[v].get("risk-feature-audit")) for v in VERSIONS},
        "intervention": {v: _intervention(runs[v].get("risk-feature-ablation")) for v in VERSIONS},
        "drift": _drift(runs["tuned"].get("drift-from-parent")),
        "circuit": _circuit(runs["tuned"].get("circuit-capital")),
        "gate": {"state": answer.state, "may_ship": answer.may_ship, "reasons": answer.reasons},
        "checks": {v: {key: _check_record(run) for key, run in runs[v].items()} for v in VERSIONS}
        | {"lens_review": {key: _check_record(run) for key, run in review_runs.items()}},
        "timings": timings or [],
        "environment": numerical_environment(),
        "libraries": library_versions(),
    }


def write(findings: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(findings, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_record(run) -> dict:
    return {
        "kind": run.kind,
        "status": run.status,
        "verdict": run.verdict,
        "blocking": run.required_check.blocking,
        "manifest_digest": run.manifest_digest,
        "seconds": _seconds(run),
        "error": run.error or None,  # why an errored run has no verdict
    }


def _seconds(run) -> float | None:
    started, finished = getattr(run, "started_at", None), getattr(run, "finished_at", None)
    if started and finished:
        return round((finished - started).total_seconds(), 1)
    return None


def _metrics_of(run) -> dict | None:
    return None if run is None else {"verdict": run.verdict, **(run.metrics or {})}


def _circuit(run) -> dict | None:
    """The circuit run's metrics and the target it traced (the demo picks it per model)."""
    found = _metrics_of(run)
    return found and {**found, "target": run.required_check.parameters.get("target")}


def _models(baseline, release, given: dict | None = None) -> dict:
    from demo import tuning

    tuned = release.model_version
    adapter_record = None
    marker = Path(tuned.source_path) / "assay-merge.json"
    merged = json.loads(marker.read_text()).get("adapter_digest") if marker.is_file() else None
    if merged and tuning.SHIPPED_ADAPTER.is_dir():
        record = json.loads((tuning.SHIPPED_ADAPTER / "training.json").read_text())
        if merged == record["adapter_digest"]:
            adapter_record = _adapter_summary(record, tuning.SHIPPED_ADAPTER)
    if adapter_record is None and given and merged == given.get("adapter_digest"):
        adapter_record = _adapter_summary(given)  # not shipped: its size is not ours to state
    return {
        "base": _version(baseline.model_version),
        "tuned": {**_version(tuned), "adapter": adapter_record},
    }


def _adapter_summary(record: dict, directory: Path | None = None) -> dict:
    from demo import tuning

    size = sum((directory / name).stat().st_size for name in record["files"]) if directory else None
    return {
        "digest": record["adapter_digest"],
        "size_bytes": size,
        "settings": record["settings"],
        "steps": record["steps"],
        "loss_per_epoch": record["loss_per_epoch"],
        "seconds": record["seconds"],
        "quiet_two_core_minutes": round(tuning.quiet_training_minutes(record), 1),
        "data_sha256": record["data"]["sha256"],
        "n_examples": record["data"]["n_examples"],
        "command": record["command"],
    }


def _version(model_version) -> dict:
    return {
        "name": str(model_version),
        "format": model_version.format,
        "weights_digest": model_version.weights_digest,
        "parent": str(model_version.parent) if model_version.parent else None,
    }


def _fidelity(review_run, release_run) -> dict:
    return {"base": _metrics_of(review_run), "tuned": _metrics_of(release_run)}


def _discovery(review_runs: dict) -> dict:
    found = {}
    for key, run in review_runs.items():
        if run.kind == "feature_discovery":
            report = _evidence(run, "discovery.json") or {}
            top = (report.get("features") or [{}])[0]
            found[key] = {
                "verdict": run.verdict,
                "metrics": run.metrics,
                "top_feature": {
                    k: top.get(k) for k in ("feature", "auroc", "cohens_d", "firing_rate")
                }
                | {"confirmation": top.get("confirmation")},
            }
    return found


def _catalog(baseline) -> list[dict]:
    from audits.models import CatalogFeature

    return [
        {"index": f.index, "risk_axis": f.risk_axis, "label": f.label, "lens": f.lens.name}
        for f in CatalogFeature.objects.filter(
            lens__model_version=baseline.model_version, status="confirmed"
        ).order_by("risk_axis", "index")
    ]


def _behaviour(run) -> dict | None:
    if run is None:
        return None
    report = _evidence(run, "behavior.json") or {}
    groups = {axis: stats for axis, stats in (report.get("axes") or {}).items()}
    for name in ("overall", "neutral", "over_refusal"):
        if report.get(name):
            groups[name] = report[name]
    measured = (report.get("judge") or {}).get("measured") or {}
    return {
        "verdict": run.verdict,
        "groups": {
            name: {
                "n": stats.get("n_prompts"),
                "counts": stats.get("counts"),
                "refusal_rate": stats.get("refusal_rate"),
                "harmful_compliance_rate": stats.get("harmful_compliance_rate"),
            }
            for name, stats in groups.items()
        },
        "judge": {
            "version": (report.get("judge") or {}).get("version"),
            "held_out": (measured.get("held_out") or {}).get("per_class"),
        },
        "examples": _examples(report.get("responses") or []),
        "max_new_tokens": (report.get("generation") or {}).get("max_new_tokens"),
    }


def _examples(responses: list[dict]) -> list[dict]:
    """One answer per axis, for the README to quote (truncated)."""
    seen, out = set(), []
    for r in responses:
        if r.get("axis") not in seen:
            seen.add(r.get("axis"))
            out.append(
                {
                    "id": r.get("id"),
                    "axis": r.get("axis"),
                    "prompt": r.get("prompt"),
                    "answer": (r.get("answer") or "")[:200],
                    "label": r.get("label"),
                }
            )
    return out


def _audit(run) -> dict | None:
    if run is None:
        return None
    report = _evidence(run, "audit.json") or {}
    return {
        "verdict": run.verdict,
        "features": [
            {
                "feature": row.get("feature"),
                "risk_axis": row.get("risk_axis"),
                "firing_rate": {
                    axis: stats.get("firing_rate") for axis, stats in row.get("axes", {}).items()
                },
                "auroc_own_axis_vs_neutral": (row.get("own_axis_vs_neutral") or {}).get("auroc"),
            }
            for row in report.get("features") or []
        ],
    }


def _intervention(run) -> dict | None:
    if run is None:
        return None
    report = _evidence(run, "intervention.json") or {}
    control = report.get("positive_control") or {}
    curve = [
        {
            "dose": entry["dose"],
            "risk": _pick(entry["groups"].get("all_risk", {})),
            "controls": _pick(entry["groups"].get("neutral", {})),
        }
        for entry in report.get("dose_response") or []
    ]
    return {
        "verdict": run.verdict,
        "replacement": report.get("replacement"),
        "features": sorted({(e["lens"], e["index"]) for e in report.get("edits") or []}),
        "axes": sorted({e.get("risk_axis") or "" for e in report.get("edits") or []}),
        "dose_response": curve,
        "positive_control": {
            "detected": control.get("detected"),
            "hook": (control.get("direction") or {}).get("hook"),
            "add_controls": _deep(control, "add", "groups", "neutral", "log_odds_change"),
            "add_detected": _deep(control, "add", "detected"),
            "ablate_risk": _deep(control, "ablate", "groups", "all_risk", "log_odds_change"),
            "ablate_detected": _deep(control, "ablate", "detected"),
            # False: no candidate direction both induced and bypassed refusal on the selection
            # prompts, so the control is the least bad one (None: fixed hook, or older evidence)
            "direction_found": _deep(control, "direction", "selection", "found"),
            "alpha": control.get("alpha"),
            "arms": {arm: _control_arm(control.get(arm)) for arm in ("add", "ablate")},
        },
        "generations": report.get("generation_rates"),
        "judge": (report.get("judge") or {}).get("version"),
    }


def _control_arm(arm: dict | None) -> dict | None:
    """What decided one arm of the positive control: its change, its rank p-value against the
    random directions, and how much refusal there was to move."""
    if not arm or "null" not in arm:
        return None  # evidence from before the random-direction null
    null = arm.get("null") or {}
    return {
        "refusal_share_before": (arm.get("room") or {}).get("refusal_share_before"),
        "change": arm.get("change"),
        "p_value": null.get("p_value"),
        "n_draws": null.get("n_draws"),
        "detected": arm.get("detected"),
        "reason": arm.get("reason"),
    }


def _pick(group: dict) -> dict:
    keys = (
        "n_prompts",
        "log_odds_before",
        "log_odds_change",
        "null_log_odds_change",
        "beyond_null",
        "kl_answer_start",
    )
    return {k: group.get(k) for k in keys}


def _deep(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _drift(run) -> dict | None:
    if run is None:
        return None
    report = _evidence(run, "drift.json") or {}
    return {
        "verdict": run.verdict,
        "summary": report.get("summary"),
        "mode": report.get("mode"),
        "features": [
            {
                "index": row["index"],
                "risk_axis": row["risk_axis"],
                "status": row["status"],
                "reason": row.get("reason"),
                "correlation": (row.get("activation_agreement") or {}).get("correlation"),
                "own_axis_firing_rate_change": row.get("own_axis_firing_rate_change_interval"),
                "old_own_axis_firing_rate": _deep(
                    row, "per_axis", row["risk_axis"], "old", "firing_rate_interval"
                ),
                "new_own_axis_firing_rate": _deep(
                    row, "per_axis", row["risk_axis"], "new", "firing_rate_interval"
                ),
            }
            for row in report.get("features") or []
        ],
        "new_risk_features": report.get("new_risk_features"),
        "n_new_risk_features": report.get("n_new_risk_features"),
    }
