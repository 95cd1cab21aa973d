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


@dataclass(frozen=True)
class ReleaseFacts:
    withdrawn: bool
    approvals_required: int
    checks: tuple[CheckFacts, ...]
    decisions: tuple[DecisionFacts, ...] = ()


@dataclass(frozen=True)
class GateAnswer:
    state: str
    reasons: list[dict] = field(default_factory=list)

    @property
    def may_ship(self) -> bool:
        return self.state == APPROVED


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
    counted = {
        d.reviewer_id
        for d in facts.decisions
        if d.decision == "approve" and d.eligible and d.covers_current_evidence
    }
    if len(counted) >= facts.approvals_required:
        return []
    stale = {d.reviewer_id for d in facts.decisions if d.decision == "approve"} - counted
    return [
        _reason(
            "approvals_missing",
            f"{len(counted)} of {facts.approvals_required} required approvals from distinct "
            f"eligible reviewers cover the current evidence"
            + (f"; {len(stale)} approval(s) do not count" if stale else ""),
            have=len(counted),
            need=facts.approvals_required,
        )
    ]


def evaluate(facts: ReleaseFacts) -> GateAnswer:
    if facts.withdrawn:
        return GateAnswer(WITHDRAWN, [_reason("withdrawn", "the release was withdrawn")])
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
