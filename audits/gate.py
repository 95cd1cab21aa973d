"""The release gate: a pure function from the facts of a release to a state and its reasons.

Nothing here reads the database; audits.actions gathers the facts and stores the answer, so the
rules can be read and tested on their own. The gate never answers approved without enough
signed approvals from distinct, eligible reviewers that cover the current evidence.
"""

from dataclasses import dataclass, field

CHECKING, IN_REVIEW, APPROVED, REJECTED, WITHDRAWN = (
    "checking",
    "in_review",
    "approved",
    "rejected",
    "withdrawn",
)


@dataclass(frozen=True)
class CheckFacts:
    key: str
    kind: str
    blocking: bool
    status: str  # queued, running, succeeded, errored, cancelled
    verdict: str  # pass, fail, inconclusive, or "" while unfinished
    waived: bool = False


@dataclass(frozen=True)
class DecisionFacts:
    reviewer_id: int
    decision: str  # approve or reject
    eligible: bool  # has the policy's approver role and is not the submitter (unless allowed)
    covers_current_evidence: bool
    key_valid: bool = True  # the signing key has not been revoked since
    reviewer: str = ""
    note: str = ""  # why it does not count, in words (stale: which check changed)

    @property
    def counts(self) -> bool:
        return self.eligible and self.covers_current_evidence and self.key_valid


@dataclass(frozen=True)
class ReleaseFacts:
    withdrawn: bool
    approvals_required: int
    checks: tuple[CheckFacts, ...]
    decisions: tuple[DecisionFacts, ...] = ()
    purpose: str = "release"  # or "evaluation": never ships
    policy_digest: str = ""
    weights_digest: str = ""
    trust_warnings: tuple[dict, ...] = ()
    # Decisions the ledger recorded for this release whose rows are gone: the gate cannot know
    # what they said, so it does not answer approved (verify_ledger names them).
    missing_decisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pins:
    """What a release pipeline expects (gate query ?policy_digest= / ?weights_digest=)."""

    policy_digest: str | None = None
    weights_digest: str | None = None


@dataclass(frozen=True)
class GateAnswer:
    state: str
    reasons: list[dict] = field(default_factory=list)
    # Reasons that stop shipping even an approved release (an evaluation, a pin mismatch).
    blockers: list[dict] = field(default_factory=list)
    trust_warnings: list[dict] = field(default_factory=list)

    @property
    def may_ship(self) -> bool:
        return self.state == APPROVED and not self.blockers


def _reason(code: str, message: str, **details) -> dict:
    return {"code": code, "message": message, **details}


def _check_reasons(checks: tuple[CheckFacts, ...]) -> tuple[list[dict], list[dict]]:
    """Reasons that block a release: (still running, finished but not passing)."""
    pending, failing = [], []
    for check in checks:
        if check.status in ("queued", "running"):
            pending.append(
                _reason("check_pending", f"check {check.key!r} is {check.status}", check=check.key)
            )
        elif check.blocking and not check.waived and check.verdict != "pass":
            outcome = check.verdict or check.status
            failing.append(
                _reason(
                    "blocking_check_not_passed",
                    f"blocking check {check.key!r} did not pass ({outcome}); it must pass or be "
                    "waived by a signed waiver",
                    check=check.key,
                    outcome=outcome,
                )
            )
    return pending, failing


def _approval_reasons(facts: ReleaseFacts) -> list[dict]:
    approvals = [d for d in facts.decisions if d.decision == "approve"]
    counted = {d.reviewer_id for d in approvals if d.counts}
    if len(counted) >= facts.approvals_required:
        return []
    not_counted = [d for d in approvals if not d.counts]
    why = "; ".join(f"{d.reviewer or d.reviewer_id}: {d.note}" for d in not_counted)
    return [
        _reason(
            "approvals_missing",
            f"{len(counted)} of {facts.approvals_required} required approvals from distinct "
            f"eligible reviewers cover the current evidence"
            + (f"; {len(not_counted)} approval(s) do not count ({why})" if not_counted else ""),
            have=len(counted),
            need=facts.approvals_required,
            not_counted=[{"reviewer": d.reviewer, "why": d.note} for d in not_counted],
        )
    ]


def _blockers(facts: ReleaseFacts, pins: Pins) -> list[dict]:
    blockers = []
    if facts.purpose != "release":
        blockers.append(
            _reason("evaluation", "this is an evaluation, not a release: it never ships")
        )
    for name, expected, actual in (
        ("policy_digest", pins.policy_digest, facts.policy_digest),
        ("weights_digest", pins.weights_digest, facts.weights_digest),
    ):
        if expected is not None and expected != actual:
            blockers.append(
                _reason(
                    f"{name}_mismatch",
                    f"the pipeline expects {name} {expected}, but this release's is {actual}",
                    expected=expected,
                    actual=actual,
                )
            )
    return blockers


def evaluate(facts: ReleaseFacts, pins: Pins | None = None) -> GateAnswer:
    answer = _state(facts)
    return GateAnswer(
        answer.state,
        answer.reasons,
        blockers=_blockers(facts, pins or Pins()),
        trust_warnings=list(facts.trust_warnings),
    )


def _state(facts: ReleaseFacts) -> GateAnswer:
    if facts.withdrawn:
        return GateAnswer(WITHDRAWN, [_reason("withdrawn", "the release was withdrawn")])
    if facts.missing_decisions:
        return GateAnswer(
            IN_REVIEW,
            [
                _reason(
                    "ledger_mismatch",
                    f"the ledger records decision(s) {', '.join(facts.missing_decisions)} on "
                    "this release that the database no longer holds; run verify_ledger",
                    decisions=list(facts.missing_decisions),
                )
            ],
        )
    rejections = [d for d in facts.decisions if d.decision == "reject" and d.eligible]
    if rejections:
        return GateAnswer(
            REJECTED, [_reason("rejected", f"{len(rejections)} reviewer(s) rejected the release")]
        )
    pending, failing = _check_reasons(facts.checks)
    if pending:
        return GateAnswer(CHECKING, pending + failing)
    reasons = failing + _approval_reasons(facts)
    if reasons:
        return GateAnswer(IN_REVIEW, reasons)
    return GateAnswer(APPROVED, [])
