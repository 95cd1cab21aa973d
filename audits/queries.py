"""Read-side facts about releases: which runs count, which decisions stand, who may decide,
what the current evidence is, and the facts the gate evaluates.

Nothing here writes. Statements, statement rules, actions and views all read through these, so
"which attempt counts" and "which decision stands" are answered in one place.
"""

from dataclasses import dataclass

from django.db.models import Q, Subquery

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


def _decisions_of(release: Release) -> list[Decision]:
    """The release's decisions with what judging them reads: the key, the reviewer and the
    reviewer's roles (one query each, however many decisions there are)."""
    return list(
        release.decisions.select_related("key", "reviewer").prefetch_related("reviewer__groups")
    )


@dataclass(frozen=True)
class ReleaseLedger:
    """What the ledger records about a release and the people who decided on it."""

    decision_seqs: dict[str, int]  # decision id -> the seq of its decision.recorded event
    recorded_decisions: frozenset[str]  # every decision the ledger recorded on the release
    account_events: tuple[AuditEvent, ...]  # the deciders' account events since it opened


def release_ledger(release: Release, decisions: list[Decision]) -> ReleaseLedger:
    """The release's ledger events the gate reads, in one query: each decision's
    decision.recorded event (its place in the ledger), every decision the ledger recorded on
    the release (its row may be gone), and the decisions' reviewers' account events after the
    release opened (none if the ledger holds no release.opened event for it)."""
    release_id = str(release.pk)
    opened = (
        AuditEvent.objects.filter(verb=RELEASE_OPENED, target_id=release_id)
        .order_by("seq")
        .values("seq")[:1]
    )
    events = (
        AuditEvent.objects.filter(
            Q(verb=DECISION_RECORDED, target_id__in=[str(d.pk) for d in decisions])
            | Q(verb=DECISION_RECORDED, data__release=release_id)
            | Q(
                verb__in=ACCOUNT_VERBS,
                target_type="user",
                target_id__in={str(d.reviewer_id) for d in decisions},
                seq__gt=Subquery(opened),
            )
        )
        .only("seq", "verb", "target_id", "actor_id", "actor_label", "data")
        .order_by("seq")
    )
    seqs, recorded, accounts = {}, set(), []
    for event in events:
        if event.verb != DECISION_RECORDED:
            accounts.append(event)
            continue
        seqs[event.target_id] = event.seq
        if isinstance(event.data, dict) and event.data.get("release") == release_id:
            recorded.add(event.target_id)
    return ReleaseLedger(seqs, frozenset(recorded), tuple(accounts))


def _in_ledger_order(decisions: list[Decision], seqs: dict[str, int]) -> list[Decision]:
    """Decisions in the order the ledger recorded them (never by a timestamp column, which a
    database insider could rewrite without breaking any hash)."""
    # A decision without its ledger event sorts last; verify_ledger reports it.
    return sorted(decisions, key=lambda d: seqs.get(str(d.pk), float("inf")))


def decisions_in_ledger_order(release: Release) -> list[Decision]:
    """The release's decisions in the order the ledger recorded them."""
    decisions = _decisions_of(release)
    return _in_ledger_order(decisions, release_ledger(release, decisions).decision_seqs)


def _standing(ordered: list[Decision]) -> list[Decision]:
    latest: dict[int, Decision] = {}
    waivers = []
    for decision in ordered:
        if decision.decision == Decision.Type.WAIVE:
            waivers.append(decision)
        else:
            latest[decision.reviewer_id] = decision
    return list(latest.values()) + waivers


def standing_decisions(release: Release) -> list[Decision]:
    """Each reviewer's latest approve or reject (a later decision supersedes an earlier one),
    and every waiver."""
    return _standing(decisions_in_ledger_order(release))


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


def current_evidence(release: Release, *, runs: list[CheckRun] | None = None) -> dict:
    """The evidence a decision on this release is about, as it stands now: the release, its
    model version's digests, its policy, and every counting run's verdict and manifest (`runs`:
    the counting runs, when the caller has just read them)."""
    model_version = release.model_version
    runs = counting_runs(release) if runs is None else runs
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
        "checks": sorted((_check_entry(run) for run in runs), key=lambda entry: entry["key"]),
    }


def evidence_digest(release: Release) -> str:
    """sha256 of the canonical JSON of current_evidence: what a signature covers."""
    return json_digest(current_evidence(release))


def _why_not(
    decision: Decision, release: Release, facts: gate.DecisionFacts, evidence: dict | None
) -> str:
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
        return "stale: " + stale_detail(decision, release, evidence=evidence)
    return ""


def stale_detail(decision: Decision, release: Release, *, evidence: dict | None = None) -> str:
    """What changed between the evidence a decision signed and the evidence now (`evidence`:
    current_evidence(release), when the caller has just read it)."""
    signed = {c["key"]: c for c in decision.statement.get("predicate", {}).get("checks", [])}
    now_checks = (current_evidence(release) if evidence is None else evidence)["checks"]
    now = {c["key"]: c for c in now_checks}
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


def decision_facts(
    decision: Decision, release: Release, current: str, *, evidence: dict | None = None
) -> gate.DecisionFacts:
    """A decision as the gate weighs it, against `current`, the current evidence digest
    (`evidence`: the current evidence itself, which explains a stale decision)."""
    facts = gate.DecisionFacts(
        reviewer_id=decision.reviewer_id,
        decision=decision.decision,
        eligible=may_decide(decision.reviewer, release),
        covers_current_evidence=decision.evidence_digest == current,
        key_valid=decision.key.revoked_at is None,
        reviewer=decision.reviewer.get_username(),
    )
    note = _why_not(decision, release, facts, evidence)
    return gate.DecisionFacts(**{**facts.__dict__, "note": note})


def _trust_warnings(events: ReleaseLedger, approvals: list[Decision]) -> list[dict]:
    """Changes to a counted approver's account made by someone else (or any role grant) after
    the release opened: the ledger shows them, and the gate answer says so."""
    users = {str(d.reviewer_id): d.reviewer for d in approvals}
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
        for event in events.account_events
        if event.target_id in users
        and (event.actor_id != int(event.target_id) or event.verb == "user.role_granted")
    ]


def _check_facts(run: CheckRun, waived: set[str]) -> gate.CheckFacts:
    return gate.CheckFacts(
        key=run.required_check.key,
        kind=run.kind,
        blocking=run.required_check.blocking,
        status=run.status,
        verdict=run.verdict,
        waived=run.required_check.key in waived,
    )


def gate_facts(release: Release) -> gate.ReleaseFacts:
    """The facts the gate evaluates, read from the database on every call (nothing is kept
    between calls: a row changed behind the application's back shows in the next answer).
    Each kind of fact is read once, in a fixed number of queries whatever the number of checks
    and decisions: the counting runs, the decisions with their keys, reviewers and roles, and
    the release's ledger events."""
    runs = counting_runs(release)
    evidence = current_evidence(release, runs=runs)
    current = json_digest(evidence)  # evidence_digest(release), without reading the runs again
    decisions = _decisions_of(release)
    events = release_ledger(release, decisions)
    judged = [
        (d, decision_facts(d, release, current, evidence=evidence))
        for d in _standing(_in_ledger_order(decisions, events.decision_seqs))
    ]
    waived = {d.check_key for d, f in judged if d.decision == Decision.Type.WAIVE and f.counts}
    counted = [d for d, facts in judged if facts.counts and d.decision != "waive"]
    return gate.ReleaseFacts(
        withdrawn=release.withdrawn_at is not None,
        approvals_required=release.policy.approvals_required,
        checks=tuple(_check_facts(run, waived) for run in runs),
        decisions=tuple(facts for d, facts in judged if d.decision != Decision.Type.WAIVE),
        purpose=release.purpose,
        policy_digest=release.policy_digest,
        weights_digest=release.model_version.weights_digest,
        trust_warnings=tuple(_trust_warnings(events, counted)),
        # Decisions the ledger recorded on this release whose rows are gone.
        missing_decisions=tuple(sorted(events.recorded_decisions - {str(d.pk) for d in decisions})),
    )


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
