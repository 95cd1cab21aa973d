"""Ledger events as rows a person reads: what happened, to what (with a link), by whom."""

from dataclasses import dataclass

from audits.models import AuditEvent
from audits.web import figures

TARGET_PAGES = {
    "release": "/releases/{id}/",
    "checkrun": "/check-runs/{id}/",
    "modelversion": "/models/{id}/",
    "checkpolicy": "/policies/{id}/",
}
TARGET_NAMES = {
    "release": "release",
    "checkrun": "check run",
    "modelversion": "model version",
    "checkpolicy": "policy",
    "policyassignment": "policy assignment",
    "reviewerkey": "signing key",
    "decision": "decision",
    "lens": "lens",
    "catalogfeature": "catalog feature",
    "evidence": "evidence",
    "user": "account",
    "dossierexport": "dossier export",
}
SKIPPED_DATA = {"body", "content", "proof_of_possession", "public_key"}


@dataclass(frozen=True)
class EventRow:
    seq: int
    at: object
    actor: str
    verb: str
    what: str
    target: str
    link: str
    details: str
    entry_hash: str


def _link(event: AuditEvent) -> str:
    page = TARGET_PAGES.get(event.target_type)
    if page:
        return page.format(id=event.target_id)
    release = (event.data or {}).get("release") if isinstance(event.data, dict) else None
    if event.target_type in ("decision", "dossierexport") and isinstance(release, str):
        return f"/releases/{release}/"
    return ""


def _details(data) -> str:
    if not isinstance(data, dict):
        return figures.summary_of(data)
    shown = {k: v for k, v in data.items() if k not in SKIPPED_DATA}
    return figures.summary_of(shown, limit=5)


def row(event: AuditEvent) -> EventRow:
    return EventRow(
        seq=event.seq,
        at=event.at,
        actor=event.actor_label,
        verb=event.verb,
        what=event.verb.replace("_", " ").replace(".", ": ", 1),
        target=f"{TARGET_NAMES.get(event.target_type, event.target_type)} "
        f"{event.target_id[:8] if len(event.target_id) > 12 else event.target_id}",
        link=_link(event),
        details=_details(event.data),
        entry_hash=event.entry_hash,
    )
