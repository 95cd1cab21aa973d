"""Read-side facts about releases: which runs count, which decisions stand, who may decide,
what the current evidence is, and the facts the gate evaluates.

Nothing here writes. Statements, statement rules, actions and views all read through these, so
"which attempt counts" and "which decision stands" are answered in one place.
"""

from audits import gate
from audits.canonical import json_digest
from audits.models import (
    AuditEvent,
    CheckPolicy,
    CheckRun,
    Decision,
    PolicyAssignment,
    Release,
)
from audits.roles import has_role

# Ledger verbs, spelled here because queries sit below the ledger module in the import order
# (audits.ledger.Verb has the same values; a test keeps them equal).
DECISION_RECORDED = "decision.recorded"
RELEASE_OPENED = "release.opened"
ACCOUNT_VERBS = (
    "user.created",
    "user.role_granted",
    "user.role_removed",
    "user.flag_changed",
    "user.password_changed",
    "user.token_created",
    "reviewer_key.registered",
    "reviewer_key.revoked",
)


def counting_runs(release: Release) -> list[CheckRun]:
    """The latest attempt of each required check: the one the gate counts."""
    latest: dict[int, CheckRun] = {}
    for run in release.check_runs.select_related("required_check").order_by("attempt"):
        latest[run.required_check_id] = run
    return list(latest.values())


def decisions_in_ledger_order(release: Release) -> list[Decision]:
    """The release's decisions in the order the ledger recorded them (never by a timestamp
    column, which a database insider could rewrite without breaking any hash)."""
    decisions = {str(d.pk): d for d in release.decisions.select_related("key", "reviewer")}
    seqs = dict(
        AuditEvent.objects.filter(verb=DECISION_RECORDED, target_id__in=decisions).values_list(
            "target_id", "seq"
        )
    )
    # A decision without its ledger event sorts last; verify_ledger reports it.
    return sorted(decisions.values(), key=lambda d: seqs.get(str(d.pk), float("inf")))


def standing_decisions(release: Release) -> list[Decision]:
    """Each reviewer's latest approve or reject (a later decision supersedes an earlier one),
    and every waiver."""
    latest: dict[int, Decision] = {}
    waivers = []
    for decision in decisions_in_ledger_order(release):
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


def _why_not(decision: Decision, release: Release, facts: gate.DecisionFacts) -> str:
    """Why a decision does not count, in words a reviewer can act on."""
    if not facts.key_valid:
        return (
            f"signed with key {decision.key_id[:12]}…, revoked since; sign again with a current key"
        )
    if not facts.eligible:
        if not decision.reviewer.is_active:
            return "the reviewer's account is deactivated"
        if decision.reviewer_id == release.submitter_id:
            return "the submitter of a release cannot approve it (four-eyes rule)"
        return f"the reviewer no longer has the role {release.policy.approver_role!r}"
    if not facts.covers_current_evidence:
        return "stale: " + stale_detail(decision, release)
    return ""


def stale_detail(decision: Decision, release: Release) -> str:
    """What changed between the evidence a decision signed and the evidence now."""
    signed = {c["key"]: c for c in decision.statement.get("predicate", {}).get("checks", [])}
    now = {c["key"]: c for c in current_evidence(release)["checks"]}
    changes = []
    for key in sorted(set(signed) | set(now)):
        before, after = signed.get(key), now.get(key)
        if before is None or after is None:
            changes.append(f"check {key!r} was {'added' if before is None else 'removed'}")
        elif before != after:
            changes.append(
                f"signed over attempt {before['attempt']} of check {key!r} "
                f"({before['status']} {before['verdict'] or '-'}), now attempt "
                f"{after['attempt']} ({after['status']} {after['verdict'] or '-'})"
            )
    return "; ".join(changes) or "the model version or policy the statement names changed"


def decision_facts(decision: Decision, release: Release, current: str) -> gate.DecisionFacts:
    facts = gate.DecisionFacts(
        reviewer_id=decision.reviewer_id,
        decision=decision.decision,
        eligible=may_decide(decision.reviewer, release),
        covers_current_evidence=decision.evidence_digest == current,
        key_valid=decision.key.revoked_at is None,
        reviewer=decision.reviewer.get_username(),
    )
    note = _why_not(decision, release, facts)
    return gate.DecisionFacts(**{**facts.__dict__, "note": note})


def trust_warnings(release: Release, approvals: list[Decision]) -> list[dict]:
    """Changes to a counted approver's account made by someone else (or any role grant) after
    the release opened: the ledger shows them, and the gate answer says so."""
    opened = (
        AuditEvent.objects.filter(verb=RELEASE_OPENED, target_id=str(release.pk))
        .values_list("seq", flat=True)
        .first()
    )
    users = {str(d.reviewer_id): d.reviewer for d in approvals}
    if opened is None or not users:
        return []
    events = AuditEvent.objects.filter(
        seq__gt=opened, verb__in=ACCOUNT_VERBS, target_type="user", target_id__in=users
    ).order_by("seq")
    return [
        {
            "code": "approver_account_changed",
            "message": f"{event.verb} for approver {users[event.target_id].get_username()} "
            f"by {event.actor_label} after the release opened (ledger event #{event.seq})",
            "reviewer": users[event.target_id].get_username(),
            "event": event.seq,
            "verb": event.verb,
            "by": event.actor_label,
        }
        for event in events
        if event.actor_id != int(event.target_id) or event.verb == "user.role_granted"
    ]


def gate_facts(release: Release) -> gate.ReleaseFacts:
    current = evidence_digest(release)
    decisions = [(d, decision_facts(d, release, current)) for d in standing_decisions(release)]
    waived = {
        d.check_key for d, facts in decisions if d.decision == Decision.Type.WAIVE and facts.counts
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
    counted = [d for d, facts in decisions if facts.counts and d.decision != "waive"]
    return gate.ReleaseFacts(
        withdrawn=release.withdrawn_at is not None,
        approvals_required=release.policy.approvals_required,
        checks=checks,
        decisions=tuple(facts for d, facts in decisions if d.decision != Decision.Type.WAIVE),
        purpose=release.purpose,
        policy_digest=release.policy_digest,
        weights_digest=release.model_version.weights_digest,
        trust_warnings=tuple(trust_warnings(release, counted)),
        missing_decisions=tuple(missing_decisions(release)),
    )


def missing_decisions(release: Release) -> list[str]:
    """Decisions the ledger recorded for this release whose rows are gone."""
    recorded = set(
        AuditEvent.objects.filter(
            verb=DECISION_RECORDED, data__release=str(release.pk)
        ).values_list("target_id", flat=True)
    )
    held = {str(pk) for pk in release.decisions.values_list("pk", flat=True)}
    return sorted(recorded - held)


def assigned_policy(family: str) -> tuple[PolicyAssignment | None, CheckPolicy | None]:
    """The assignment that applies to a model family (its own, else the default) and the
    newest published version of the policy it names."""
    assignment = (
        PolicyAssignment.objects.filter(family=family).first()
        or PolicyAssignment.objects.filter(family=PolicyAssignment.DEFAULT_FAMILY).first()
    )
    if assignment is None:
        return None, None
    policy = (
        CheckPolicy.objects.filter(name=assignment.policy_name, status=CheckPolicy.Status.PUBLISHED)
        .order_by("-version")
        .first()
    )
    return assignment, policy
