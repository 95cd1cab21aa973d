"""Read-side facts about releases: which runs count, which decisions stand, who may decide,
what the current evidence is, and the facts the gate evaluates.

Nothing here writes. Statements, statement rules, actions and views all read through these, so
"which attempt counts" and "which decision stands" are answered in one place.
"""

from audits import gate
from audits.canonical import json_digest
from audits.models import CheckRun, Decision, Release
from audits.roles import has_role


def counting_runs(release: Release) -> list[CheckRun]:
    """The latest attempt of each required check: the one the gate counts."""
    latest: dict[int, CheckRun] = {}
    for run in release.check_runs.select_related("required_check").order_by("attempt"):
        latest[run.required_check_id] = run
    return list(latest.values())


def standing_decisions(release: Release) -> list[Decision]:
    """Each reviewer's latest approve or reject (a later decision supersedes an earlier one),
    and every waiver."""
    latest: dict[int, Decision] = {}
    waivers = []
    for decision in release.decisions.order_by("recorded_at"):
        if decision.decision == Decision.Type.WAIVE:
            waivers.append(decision)
        else:
            latest[decision.reviewer_id] = decision
    return list(latest.values()) + waivers


def may_decide(user, release: Release) -> bool:
    policy = release.policy
    if user.pk == release.submitter_id and not policy.submitter_may_approve:
        return False
    return has_role(user, policy.approver_role)


def _check_entry(run: CheckRun) -> dict:
    return {
        "key": run.required_check.key,
        "kind": run.kind,
        "blocking": run.required_check.blocking,
        "run_id": str(run.pk),
        "attempt": run.attempt,
        "status": run.status,
        "verdict": run.verdict,
        "manifest_digest": run.manifest_digest,
    }


def current_evidence(release: Release) -> dict:
    """The evidence a decision on this release is about, as it stands now: the release, its
    model version's digests, its policy, and every counting run's verdict and manifest."""
    model_version = release.model_version
    return {
        "release": str(release.pk),
        "model_version": {
            "id": str(model_version.pk),
            "family": model_version.family,
            "version": model_version.version,
            "weights_digest": model_version.weights_digest,
            "tokenizer_digest": model_version.tokenizer_digest,
            "config_digest": model_version.config_digest,
        },
        "policy": {
            "id": str(release.policy_id),
            "name": release.policy.name,
            "version": release.policy.version,
            "digest": release.policy_digest,
        },
        "checks": sorted(
            (_check_entry(run) for run in counting_runs(release)), key=lambda entry: entry["key"]
        ),
    }


def evidence_digest(release: Release) -> str:
    """sha256 of the canonical JSON of current_evidence: what a signature covers."""
    return json_digest(current_evidence(release))


def gate_facts(release: Release) -> gate.ReleaseFacts:
    current = evidence_digest(release)
    decisions = [
        (d, may_decide(d.reviewer, release), d.evidence_digest == current)
        for d in standing_decisions(release)
    ]
    waived = {
        d.check_key
        for d, eligible, fresh in decisions
        if d.decision == Decision.Type.WAIVE and eligible and fresh
    }
    checks = tuple(
        gate.CheckFacts(
            key=run.required_check.key,
            kind=run.kind,
            blocking=run.required_check.blocking,
            status=run.status,
            verdict=run.verdict,
            waived=run.required_check.key in waived,
        )
        for run in counting_runs(release)
    )
    return gate.ReleaseFacts(
        withdrawn=release.withdrawn_at is not None,
        approvals_required=release.policy.approvals_required,
        checks=checks,
        decisions=tuple(
            gate.DecisionFacts(d.reviewer_id, d.decision, eligible, fresh)
            for d, eligible, fresh in decisions
            if d.decision != Decision.Type.WAIVE
        ),
    )
