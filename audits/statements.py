"""What a reviewer signs: an in-toto Statement v1 binding a decision to the current evidence.

The subject is the model's weights digest. The predicate binds the release, the model version,
the policy (name, version, digest), every required check's counting run (id, attempt, status,
verdict, evidence-manifest digest), the decision and its meaning, the rationale, conditions,
and the signer's printed name and time. `evidence_digest` is the sha256 of the canonical JSON of
the evidence part alone (audits.queries.current_evidence); a decision covers the current
evidence only while it is unchanged.
"""

from datetime import datetime

from audits import signing
from audits.canonical import json_digest
from audits.models import Decision, Release
from audits.queries import current_evidence

MEANINGS: dict[str, str] = {
    Decision.Type.APPROVE: "approval for release of this model version under this policy",
    Decision.Type.REJECT: "rejection of this release",
    Decision.Type.WAIVE: "waiver of the named blocking check: the release may proceed without "
    "it passing",
}
EVIDENCE_FIELDS = ("release", "model_version", "policy", "checks")


def subject(release: Release) -> list[dict]:
    model_version = release.model_version
    return [{"name": str(model_version), "digest": {"sha256": model_version.weights_digest}}]


def build(
    release: Release,
    *,
    decision: str,
    check: str = "",
    rationale: str = "",
    conditions: list[str] | None = None,
    signer_username: str,
    signer_name: str,
    key_id: str,
    signed_at: datetime,
) -> dict:
    current = current_evidence(release)
    return {
        "_type": signing.STATEMENT_TYPE,
        "subject": subject(release),
        "predicateType": signing.PREDICATE_TYPE,
        "predicate": {
            **current,
            "evidence_digest": json_digest(current),
            "decision": {"type": decision, "check": check or None, "meaning": MEANINGS[decision]},
            "rationale": rationale,
            "conditions": list(conditions or []),
            "signer": {"username": signer_username, "name": signer_name, "key_id": key_id},
            "signed_at": signed_at.isoformat(),
        },
    }


def summary_lines(statement: dict) -> list[str]:
    """A human-readable summary of a statement, for the CLI to show before signing."""
    predicate = statement["predicate"]
    lines = [
        f"Release:   {predicate['release']}",
        f"Model:     {predicate['model_version']['family']}@"
        f"{predicate['model_version']['version']} (weights sha256 "
        f"{predicate['model_version']['weights_digest']})",
        f"Policy:    {predicate['policy']['name']} v{predicate['policy']['version']} "
        f"({predicate['policy']['digest']})",
        "Checks:",
    ]
    for check in predicate["checks"]:
        lines.append(
            f"  - {check['key']} ({check['kind']}, "
            f"{'blocking' if check['blocking'] else 'advisory'}): {check['status']} "
            f"{check['verdict'] or '-'}; evidence manifest {check['manifest_digest']}"
        )
    decision = predicate["decision"]
    lines += [
        f"Decision:  {decision['type']}"
        + (f" check {decision['check']}" if decision["check"] else ""),
        f"Meaning:   {decision['meaning']}",
        f"Rationale: {predicate['rationale']}",
        f"Conditions: {'; '.join(predicate['conditions']) or 'none'}",
        f"Signer:    {predicate['signer']['name']} ({predicate['signer']['username']}), "
        f"key {predicate['signer']['key_id']}",
        f"Signed at: {predicate['signed_at']}",
    ]
    return lines
