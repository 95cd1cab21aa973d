"""Everything a dossier says, read once from the records into plain JSON-able data.

The PDF and the bundle are both made from one Snapshot, so the numbers a regulator reads are the
numbers the offline verifier checks. The snapshot is read while the ledger's head is locked:
every change to what the gate reads writes a ledger event in its own transaction, so no such
change can commit between the checkpoint the snapshot is bound to and the rows it reads.
"""

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audits import gate, ledger, queries, signing
from audits.models import (
    AuditEvent,
    CheckRun,
    Decision,
    Evidence,
    LedgerCheckpoint,
    LedgerHead,
    Lens,
    ModelVersion,
    Release,
    ReviewerKey,
)
from audits.roles import Role

FORMAT = "assay-dossier-bundle/1"
# Earlier signed checkpoints carried with a consistency proof to the dossier's checkpoint.
MAX_EARLIER_CHECKPOINTS = 32


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@dataclass
class EvidenceFile:
    run_id: str
    title: str
    media_type: str
    evidence_kind: str
    sha256: str
    size: int
    path: str  # inside the bundle
    source: Path  # in the evidence store
    problem: str = ""  # the stored bytes are missing or no longer match


@dataclass
class Snapshot:
    dossier_id: str
    generated_at: datetime
    release: dict
    model_version: dict
    lineage: list[dict]
    policy: dict
    runs: list[dict]
    evidence: list[EvidenceFile]
    decisions: list[dict]
    envelopes: dict[str, dict]
    keys: list[dict]
    people: list[dict]
    lenses: list[dict]
    events: list[dict]
    proofs: dict[str, dict]
    checkpoint: dict
    server_key: dict
    earlier_checkpoints: list[dict]
    gate: dict
    problems: list[str] = field(default_factory=list)

    @property
    def tree_size(self) -> int:
        return int(json.loads(self.checkpoint["body"])["tree_size"])

    def records(self) -> dict[str, object]:
        """The records as the bundle carries them (records/<name>.json)."""
        return {
            "release": self.release,
            "model_version": {**self.model_version, "lineage": self.lineage},
            "policy": self.policy,
            "check_runs": self.runs,
            "decisions": self.decisions,
            "people": self.people,
            "lenses": self.lenses,
            "gate": self.gate,
        }


# --- records ----------------------------------------------------------------------------


def release_record(release: Release) -> dict:
    return {
        "id": str(release.pk),
        "title": release.title,
        "purpose": release.purpose,
        "model_version": str(release.model_version_id),
        "policy": str(release.policy_id),
        "policy_digest": release.policy_digest,
        "submitter": release.submitter.get_username(),
        "opened_at": iso(release.opened_at),
        "withdrawn_at": iso(release.withdrawn_at),
        "stored_state": release.state,
    }


def model_version_record(version: ModelVersion) -> dict:
    return {
        "id": str(version.pk),
        "family": version.family,
        "version": version.version,
        "format": version.format,
        "source_path": version.source_path,
        "description": version.description,
        "weights_digest": version.weights_digest,
        "tokenizer_digest": version.tokenizer_digest,
        "config_digest": version.config_digest,
        "file_digests": version.file_digests,
        "parent": str(version.parent_id) if version.parent_id else None,
        "registered_by": version.registered_by.get_username(),
        "registered_at": iso(version.registered_at),
        "digested_at": iso(version.digested_at),
    }


def lineage(version: ModelVersion) -> list[dict]:
    """The version's ancestors, nearest first (bounded: a cycle cannot be stored, but stay safe)."""
    chain: list[dict] = []
    seen, parent = {version.pk}, version.parent
    while parent is not None and parent.pk not in seen and len(chain) < 20:
        seen.add(parent.pk)
        chain.append(
            {
                "id": str(parent.pk),
                "name": str(parent),
                "format": parent.format,
                "weights_digest": parent.weights_digest,
            }
        )
        parent = parent.parent
    return chain


def policy_record(release: Release) -> dict:
    policy = release.policy
    return {
        "id": str(policy.pk),
        "status": policy.status,
        "digest": policy.digest,
        "created_by": policy.created_by.get_username(),
        "created_at": iso(policy.created_at),
        "published_by": policy.published_by.get_username() if policy.published_by else None,
        "published_at": iso(policy.published_at),
        "content": policy.content(),
    }


def run_record(run: CheckRun, counting: set) -> dict:
    latest_attempt = run.pk in counting
    return {
        "id": str(run.pk),
        "release": str(run.release_id),
        "key": run.required_check.key,
        "kind": run.kind,
        "blocking": run.required_check.blocking,
        "attempt": run.attempt,
        "status": run.status,
        "verdict": run.verdict,
        "metrics": run.metrics,
        "summary": run.summary,
        "error": run.error,
        "provenance": run.provenance,
        "manifest_digest": run.manifest_digest,
        "worker": run.worker,
        "queued_at": iso(run.queued_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "cancelled_by": run.cancelled_by.get_username() if run.cancelled_by else None,
        "counting": latest_attempt,
        "evidence": [],
    }


def _safe_name(title: str) -> str:
    name = "".join(c if c.isalnum() or c in "._-" else "_" for c in title).lstrip(".")
    return name or "artifact"


def evidence_files(run_records: list[dict], rows: list[Evidence]) -> list[EvidenceFile]:
    """The counting runs' evidence, each read from the store and checked against its hash."""
    by_run = {r["id"]: r for r in run_records if r["counting"]}
    files = []
    for row in rows:
        record = by_run.get(str(row.check_run_id))
        if record is None:
            continue
        item = EvidenceFile(
            run_id=record["id"],
            title=row.title,
            media_type=row.media_type,
            evidence_kind=row.evidence_kind,
            sha256=row.sha256,
            size=row.size,
            path=f"evidence/{record['id']}/{_safe_name(row.title)}",
            source=row.path,
        )
        record["evidence"].append(
            {
                "title": item.title,
                "media_type": item.media_type,
                "evidence_kind": item.evidence_kind,
                "sha256": item.sha256,
                "size": item.size,
                "path": item.path,
            }
        )
        files.append(item)
    return files


def _store_problem(item: EvidenceFile) -> str:
    digest = hashlib.sha256()
    try:
        with item.source.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return f"evidence {item.title} of run {item.run_id} is missing from the store"
    if digest.hexdigest() != item.sha256:
        return (
            f"evidence {item.title} of run {item.run_id} no longer matches its recorded "
            "sha256 (the stored bytes were altered); the bundle carries the bytes as stored"
        )
    return ""


def decision_record(decision: Decision, position: int, facts: gate.DecisionFacts) -> dict:
    predicate = decision.statement.get("predicate", {}) if decision.statement else {}
    verifies, problem = envelope_verifies(decision)
    signatures = decision.envelope.get("signatures") or [{}]
    raw_signature = signatures[0].get("sig", "") if isinstance(signatures[0], dict) else ""
    return {
        "id": str(decision.pk),
        "release": str(decision.release_id),
        "ledger_order": position,
        "reviewer": decision.reviewer.get_username(),
        "printed_name": (predicate.get("signer") or {}).get("name", ""),
        "key_id": decision.key_id,
        "decision": decision.decision,
        "check": decision.check_key,
        "meaning": (predicate.get("decision") or {}).get("meaning", ""),
        "rationale": decision.rationale,
        "conditions": decision.conditions,
        "evidence_digest": decision.evidence_digest,
        "payload_sha256": decision.payload_sha256,
        "signature_sha256": hashlib.sha256(raw_signature.encode("ascii")).hexdigest(),
        "signed_at": iso(decision.signed_at),
        "recorded_at": iso(decision.recorded_at),
        "statement": decision.statement,
        "envelope": f"signatures/{decision.pk}.dsse.json",
        "verifies_at_export": verifies,
        "verification_problem": problem,
        "counts": facts.counts,
        "why_not": facts.note,
    }


def envelope_verifies(decision: Decision) -> tuple[bool, str]:
    try:
        opened = signing.open_envelope(decision.envelope)
        if opened.key_id != decision.key_id:
            return False, "the envelope names another key than the decision's"
        signing.verify_signature(
            signing.b64decode(decision.key.public_key, "key"), opened.payload, opened.signature
        )
    except signing.SignatureError as exc:
        return False, str(exc)
    return True, ""


def key_record(key: ReviewerKey) -> dict:
    raw = signing.b64decode(key.public_key, "key")
    pem = signing.Ed25519PublicKey.from_public_bytes(raw)
    from cryptography.hazmat.primitives import serialization

    return {
        "key_id": key.key_id,
        "owner": key.user.get_username(),
        "algorithm": "ed25519",
        "public_key": key.public_key,
        "pem": pem.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode(),
        "label": key.label,
        "registered_at": iso(key.registered_at),
        "revoked_at": iso(key.revoked_at),
    }


def person_record(user) -> dict:
    groups = {g.name for g in user.groups.all()} & {r.value for r in Role}
    return {
        "id": str(user.pk),
        "username": user.get_username(),
        "name": user.get_full_name(),
        "roles": sorted(groups),
        "is_active": user.is_active,
        "is_superuser": user.is_superuser,
    }


def lens_record(lens: Lens) -> dict:
    return {
        "id": str(lens.pk),
        "name": lens.name,
        "model_version": str(lens.model_version_id),
        "status": lens.status,
        "hook_name": lens.hook_name,
        "architecture": lens.architecture,
        "d_in": lens.d_in,
        "d_sae": lens.d_sae,
        "digest": lens.digest,
        "source_path": lens.source_path,
        "training": lens.training,
        "registered_by": lens.registered_by.get_username(),
        "registered_at": iso(lens.registered_at),
    }


def gate_record(answer: gate.GateAnswer) -> dict:
    return {
        "state": answer.state,
        "may_ship": answer.may_ship,
        "reasons": answer.reasons,
        "blockers": answer.blockers,
        "trust_warnings": answer.trust_warnings,
    }


# --- the ledger excerpt -----------------------------------------------------------------


def event_filter(release: Release, ids: dict[str, list[str]]) -> Q:
    """This release's events and those of every record the dossier carries."""
    query = Q(target_type="release", target_id=str(release.pk))
    query |= Q(verb=ledger.Verb.DECISION_RECORDED, data__release=str(release.pk))
    query |= Q(verb=ledger.Verb.DOSSIER_EXPORTED, data__release=str(release.pk))
    # Every rotation of the checkpoint key: the verifier believes a retired key only if the
    # signed tree includes the event that retired it.
    query |= Q(verb=ledger.Verb.LEDGER_KEY_ROTATED)
    for target_type, targets in ids.items():
        if targets:
            query |= Q(target_type=target_type, target_id__in=targets)
    return query


def event_record(event: AuditEvent) -> dict:
    return {
        "seq": event.seq,
        "entry_hash": event.entry_hash,
        "prev_hash": event.prev_hash,
        "body": event.body,
    }


def earlier_checkpoints(first_seq: int, point: LedgerCheckpoint) -> list[dict]:
    """Checkpoints the server signed since the release's first event (the newest ones, in the
    database and in the checkpoint log), each with a consistency proof to the dossier's: the
    ledger the dossier shows extends every head the server signed before."""
    found: dict[str, dict] = {}
    rows = LedgerCheckpoint.objects.filter(tree_size__gte=first_seq, tree_size__lt=point.tree_size)
    for row in rows.order_by("-tree_size")[:MAX_EARLIER_CHECKPOINTS]:
        found[row.body] = ledger.signed_checkpoint(row)
    log = Path(settings.ASSAY_CHECKPOINT_LOG)
    if log.exists():
        for held in ledger.read_checkpoints(log)[-MAX_EARLIER_CHECKPOINTS:]:
            size = _tree_size(held)
            if size is not None and first_seq <= size < point.tree_size:
                found.setdefault(held["body"], held)
    carried = []
    for held in sorted(found.values(), key=lambda h: _tree_size(h) or 0):
        size = _tree_size(held) or 0
        carried.append(
            {"checkpoint": held, "consistency": ledger.consistency(size, point.tree_size)}
        )
    return carried[-MAX_EARLIER_CHECKPOINTS:]


def server_keys(point: LedgerCheckpoint) -> dict:
    """The current checkpoint key and the retired ones, each retired key with its rotation
    statement, both signatures, and a consistency proof from the tree it handed over at to the
    dossier's: the offline verifier checks the chain of keys and that the ledger it is shown
    extends every handover."""
    keys = ledger.server_keys()
    for entry in keys["retired"]:
        size = (entry.get("statement") or {}).get("tree_size")
        if isinstance(size, int) and 1 <= size < point.tree_size:
            entry["consistency"] = ledger.consistency(size, point.tree_size)
    return keys


def _tree_size(held: dict) -> int | None:
    try:
        return int(json.loads(held["body"])["tree_size"])
    except (KeyError, ValueError, TypeError):
        return None


# --- the snapshot -----------------------------------------------------------------------


def _decisions(release: Release) -> list[Decision]:
    return queries.decisions_in_ledger_order(release)


def snapshot(release_id, *, dossier_id: str) -> Snapshot:
    """The dossier's records, then (outside the lock: it reads every evidence file) whether
    each stored evidence file still has its recorded hash."""
    snap = _locked_snapshot(release_id, dossier_id=dossier_id)
    for item in snap.evidence:
        item.problem = _store_problem(item)
    snap.problems = [item.problem for item in snap.evidence if item.problem]
    return snap


@transaction.atomic
def _locked_snapshot(release_id, *, dossier_id: str) -> Snapshot:
    # The head lock holds every ledger writer (and so every change the gate reads) back until
    # the snapshot is read: records and events describe one moment.
    LedgerHead.objects.select_for_update().get_or_create(pk=1)
    point = ledger.checkpoint()
    release = Release.objects.select_related(
        "policy__created_by", "policy__published_by", "submitter", "model_version__registered_by"
    ).get(pk=release_id)
    counting = {run.pk for run in queries.counting_runs(release)}
    runs = list(
        release.check_runs.select_related("required_check", "cancelled_by").order_by(
            "required_check__key", "attempt"
        )
    )
    run_records = [run_record(run, counting) for run in runs]
    evidence_rows = list(
        Evidence.objects.filter(check_run__in=counting).order_by("check_run", "title")
    )
    decisions = _decisions(release)
    keys = {d.key for d in decisions}
    people = {release.submitter, *(d.reviewer for d in decisions), *(k.user for k in keys)}
    lenses = list(
        Lens.objects.filter(model_version=release.model_version).select_related("registered_by")
    )
    ids = {
        "checkrun": [str(r.pk) for r in runs],
        "checkpolicy": [str(release.policy_id)],
        "modelversion": [str(release.model_version_id)],
        "lens": [str(lens.pk) for lens in lenses],
        "reviewerkey": [k.key_id for k in keys],
        "user": [str(p.pk) for p in people],
        "evidence": [str(e.pk) for e in evidence_rows],
    }
    events = list(
        AuditEvent.objects.filter(event_filter(release, ids), seq__lte=point.tree_size).order_by(
            "seq"
        )
    )
    proofs = {str(e.seq): ledger.inclusion(e.seq, point.tree_size) for e in events}
    answer = gate.evaluate(queries.gate_facts(release))
    current = queries.evidence_digest(release)
    files = evidence_files(run_records, evidence_rows)
    return Snapshot(
        dossier_id=dossier_id,
        generated_at=timezone.now(),
        release=release_record(release),
        model_version=model_version_record(release.model_version),
        lineage=lineage(release.model_version),
        policy=policy_record(release),
        runs=run_records,
        evidence=files,
        decisions=[
            decision_record(d, i, queries.decision_facts(d, release, current))
            for i, d in enumerate(decisions, start=1)
        ],
        envelopes={str(d.pk): d.envelope for d in decisions},
        keys=[key_record(k) for k in sorted(keys, key=lambda k: k.key_id)],
        people=[person_record(p) for p in sorted(people, key=lambda p: p.pk)],
        lenses=[lens_record(lens) for lens in lenses],
        events=[event_record(e) for e in events],
        proofs=proofs,
        checkpoint=ledger.signed_checkpoint(point),
        server_key=server_keys(point),
        earlier_checkpoints=earlier_checkpoints(events[0].seq if events else 1, point),
        gate=gate_record(answer),
    )
