"""The server's rules for a signed statement, checked before a decision is recorded.

Order matters for the messages people see: first whether the statement is about this release at
all, then whether this person may decide, then whether it covers the current evidence, then the
decision's own fields.
"""

from datetime import datetime, timedelta

from django.utils import timezone

from audits import statements
from audits.errors import ActionError, ConflictError, ForbiddenError
from audits.models import Decision, Release, ReviewerKey
from audits.queries import current_evidence, evidence_digest, may_decide

CLOCK_SKEW = timedelta(minutes=15)
MAX_RATIONALE = 10_000


def check_statement(*, actor, release: Release, key: ReviewerKey, statement: dict) -> dict:
    """The predicate, with signed_at parsed, or an ActionError saying what is wrong."""
    predicate = statement.get("predicate")
    if not isinstance(predicate, dict):
        raise ActionError("the statement has no predicate object")
    if predicate.get("release") != str(release.pk):
        raise ActionError(
            f"the statement is about release {predicate.get('release')}, not {release.pk}; "
            "a signature cannot be reused for another release"
        )
    _check_may_decide(actor, release)
    _check_current_evidence(release, statement, predicate)
    _check_decision(release, predicate.get("decision"))
    _check_words(predicate)
    _check_signer(actor, key, predicate.get("signer"))
    return {**predicate, "signed_at": _signed_at(predicate.get("signed_at"))}


def _check_may_decide(actor, release: Release) -> None:
    if release.withdrawn_at is not None:
        raise ConflictError(f"release {release.pk} was withdrawn")
    if actor.pk == release.submitter_id and not release.policy.submitter_may_approve:
        raise ForbiddenError(
            "the submitter of a release cannot sign decisions on it (four-eyes rule of policy "
            f"{release.policy})"
        )
    if not may_decide(actor, release):
        raise ForbiddenError(
            f"decisions under policy {release.policy} need the role "
            f"{release.policy.approver_role!r}"
        )


def _check_current_evidence(release: Release, statement: dict, predicate: dict) -> None:
    current = current_evidence(release)
    changed = [name for name in statements.EVIDENCE_FIELDS if predicate.get(name) != current[name]]
    if statement.get("subject") != statements.subject(release):
        changed.append("subject")
    if predicate.get("evidence_digest") != evidence_digest(release):
        changed.append("evidence_digest")
    if changed:
        raise ConflictError(
            f"the statement does not match the release's current evidence ({', '.join(changed)} "
            "differ): the evidence changed after it was fetched; fetch the statement again, "
            "review the new evidence and sign that"
        )


def _check_decision(release: Release, decision) -> None:
    if not isinstance(decision, dict) or decision.get("type") not in Decision.Type.values:
        raise ActionError("decision.type must be approve, reject or waive")
    kind = decision["type"]
    if decision.get("meaning") != statements.MEANINGS[kind]:
        raise ActionError(f"decision.meaning must be {statements.MEANINGS[kind]!r}")
    check = decision.get("check")
    if kind == Decision.Type.WAIVE:
        keys = {entry["key"] for entry in current_evidence(release)["checks"] if entry["blocking"]}
        if check not in keys:
            raise ActionError(
                f"a waiver must name one of the blocking checks: "
                f"{', '.join(sorted(keys)) or 'none'}"
            )
    elif check is not None:
        raise ActionError("decision.check is only for waivers; use null")
    if kind != Decision.Type.REJECT and release.state == Release.State.CHECKING:
        raise ConflictError("checks are still running; approve or waive once they have finished")


def _check_words(predicate: dict) -> None:
    rationale = predicate.get("rationale")
    if not isinstance(rationale, str) or not rationale.strip() or len(rationale) > MAX_RATIONALE:
        raise ActionError(f"a rationale (1 to {MAX_RATIONALE} characters) is required")
    conditions = predicate.get("conditions")
    if not isinstance(conditions, list) or not all(isinstance(c, str) for c in conditions):
        raise ActionError("conditions must be a list of strings")


def _check_signer(actor, key: ReviewerKey, signer) -> None:
    if (
        not isinstance(signer, dict)
        or not isinstance(signer.get("name"), str)
        or not signer["name"].strip()
    ):
        raise ActionError("signer.name (the signer's printed name) is required")
    if signer.get("username") != actor.get_username():
        raise ForbiddenError("signer.username must be the signed-in reviewer")
    if signer.get("key_id") != key.key_id:
        raise ActionError("signer.key_id must be the id of the signing key")


def _signed_at(value) -> datetime:
    try:
        signed_at = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ActionError("signed_at must be an ISO 8601 time with a time zone") from None
    if signed_at.tzinfo is None:
        raise ActionError("signed_at must include a time zone")
    if abs(timezone.now() - signed_at) > CLOCK_SKEW:
        raise ActionError(
            f"signed_at {value} is more than {CLOCK_SKEW} from the server's clock; sign again"
        )
    return signed_at
