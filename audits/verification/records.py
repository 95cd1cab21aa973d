"""The records pass of verify_ledger: what the gate and the API read is what the ledger says.

Each event's columns against its signed-into-the-chain bytes; then, for every record kind the
gate reads, the row against its ledger events (and the events against the rows, so a deleted
row or a forged event is found): check runs and their evidence manifests, published policies,
releases, model versions' digests, lenses, reviewer keys, decisions, and who holds which role.
"""

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth import get_user_model

from audits import ledger, signing
from audits.canonical import canonical_json, sha256_hex
from audits.ledger import Verb
from audits.models import (
    AuditEvent,
    CheckPolicy,
    CheckRun,
    Decision,
    Evidence,
    EvidenceIntegrityError,
    Lens,
    ModelVersion,
    Release,
    ReviewerKey,
)
from audits.roles import Role

TERMINAL: dict[str, Verb] = {
    CheckRun.Status.SUCCEEDED: Verb.CHECK_RUN_SUCCEEDED,
    CheckRun.Status.ERRORED: Verb.CHECK_RUN_ERRORED,
    CheckRun.Status.CANCELLED: Verb.CHECK_RUN_CANCELLED,
}


class Events:
    """The ledger's events by verb and target, read once."""

    def __init__(self) -> None:
        self.by_target: dict[tuple[str, str], list[AuditEvent]] = defaultdict(list)
        self.by_verb: dict[str, list[AuditEvent]] = defaultdict(list)
        for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=5000):
            self.by_target[(event.verb, event.target_id)].append(event)
            self.by_verb[event.verb].append(event)

    def of(self, verb: Verb, target) -> list[AuditEvent]:
        return self.by_target.get((verb.value, str(target)), [])

    def first(self, verb: Verb, target) -> AuditEvent | None:
        found = self.of(verb, target)
        return found[0] if found else None

    def targets(self, verb: Verb) -> set[str]:
        return {event.target_id for event in self.by_verb.get(verb.value, [])}


def check_columns() -> list[str]:
    """Each event's columns say what its hashed bytes say (the API and the gate read columns)."""
    problems = []
    for event in AuditEvent.objects.order_by("seq").iterator(chunk_size=5000):
        body = json.loads(event.body)
        columns = {
            "seq": event.seq,
            "at": ledger.timestamp(event.at),
            "actor": event.actor_label,
            "verb": event.verb,
            "target_type": event.target_type,
            "target_id": event.target_id,
            "data": event.data,
            "prev_hash": event.prev_hash,
        }
        changed = sorted(name for name in columns if columns[name] != body.get(name))
        if changed:
            problems.append(
                f"event #{event.seq}: its columns ({', '.join(changed)}) differ from the bytes "
                "the chain hashed"
            )
    return problems


def _missing_rows(events: Events, verb: Verb, ids: Iterable[str], what: str) -> list[str]:
    missing = events.targets(verb) - set(ids)
    return [f"{what} {target} was deleted: its {verb.value} event remains" for target in missing]


# --- check runs and their evidence ----------------------------------------------------------


def check_runs(events: Events) -> list[str]:
    problems = []
    runs = list(CheckRun.objects.select_related("required_check"))
    for run in runs:
        problems += _run_problems(run, events)
    problems += _missing_rows(events, Verb.CHECK_RUN_QUEUED, (str(r.pk) for r in runs), "check run")
    return problems


def _run_problems(run: CheckRun, events: Events) -> list[str]:
    label = f"check run {run.pk} ({run.required_check.key} #{run.attempt})"
    queued = events.first(Verb.CHECK_RUN_QUEUED, run.pk)
    if queued is None:
        return [f"{label} has no ledger event: it was inserted directly"]
    if (queued.data.get("attempt"), queued.data.get("release")) != (
        run.attempt,
        str(run.release_id),
    ):
        return [f"{label}: its attempt or release differs from its check_run.queued event"]
    finished = [v for status, v in TERMINAL.items() if events.of(v, run.pk)]
    expected = [TERMINAL[run.status]] if run.status in TERMINAL else []
    if finished != expected:
        return [
            f"{label}: its status {run.status!r} differs from the ledger, which records "
            f"{', '.join(v.value for v in finished) or 'no finish'}"
        ]
    if run.status == CheckRun.Status.SUCCEEDED:
        return _succeeded_problems(run, events.first(Verb.CHECK_RUN_SUCCEEDED, run.pk), label)
    return []


def _succeeded_problems(run: CheckRun, event, label: str) -> list[str]:
    if (event.data.get("verdict"), event.data.get("manifest_digest")) != (
        run.verdict,
        run.manifest_digest,
    ):
        return [f"{label}: its verdict or manifest digest differs from its ledger event"]
    evidence = {e.title: e for e in run.evidence.all()}
    manifest_row = evidence.pop("manifest.json", None)
    if manifest_row is None or manifest_row.sha256 != event.data.get("manifest_digest"):
        return [f"{label}: its manifest is not the one the ledger recorded"]
    try:
        manifest = json.loads(manifest_row.read_bytes())
    except EvidenceIntegrityError as exc:
        return [f"{label}: {exc}"]
    if canonical_json(manifest["metrics"]) != canonical_json(run.metrics) or (
        manifest["verdict"] != run.verdict
    ):
        return [f"{label}: its metrics or verdict differ from its manifest"]
    listed = sorted((a["title"], a["sha256"], a["size"]) for a in manifest["artifacts"])
    stored = sorted((e.title, e.sha256, e.size) for e in evidence.values())
    if listed != stored:
        return [f"{label}: its evidence rows differ from the artifacts its manifest lists"]
    return []


def check_evidence_files() -> list[str]:
    problems = []
    for evidence in Evidence.objects.all():
        try:
            evidence.read_bytes()
        except EvidenceIntegrityError as exc:
            problems.append(str(exc))
    return problems


# --- policies, releases, model versions, lenses ---------------------------------------------


def check_policies(events: Events) -> list[str]:
    problems = []
    published = list(CheckPolicy.objects.filter(status=CheckPolicy.Status.PUBLISHED))
    for policy in published:
        event = events.first(Verb.POLICY_PUBLISHED, policy.pk)
        if event is None:
            problems.append(f"policy {policy} is published but the ledger never published it")
        elif not policy.digest == policy.compute_digest() == event.data.get("digest"):
            problems.append(
                f"policy {policy}: it or its required checks changed after it was published "
                "(its content no longer has the digest the ledger recorded)"
            )
    problems += _missing_rows(
        events, Verb.POLICY_PUBLISHED, (str(p.pk) for p in published), "published policy"
    )
    return problems


def check_releases(events: Events) -> list[str]:
    problems = []
    releases = list(Release.objects.all())
    for release in releases:
        event = events.first(Verb.RELEASE_OPENED, release.pk)
        opened = (
            str(release.model_version_id),
            str(release.policy_id),
            release.policy_digest,
        )
        if event is None or opened != (
            event.data.get("model_version"),
            event.data.get("policy"),
            event.data.get("policy_digest"),
        ):
            problems.append(f"release {release.pk}: it differs from its release.opened event")
        elif event.data.get("purpose", Release.Purpose.RELEASE) != release.purpose:
            problems.append(f"release {release.pk}: its purpose differs from the ledger's")
        elif bool(events.of(Verb.RELEASE_WITHDRAWN, release.pk)) != bool(release.withdrawn_at):
            problems.append(f"release {release.pk}: its withdrawal differs from the ledger's")
    problems += _missing_rows(events, Verb.RELEASE_OPENED, (str(r.pk) for r in releases), "release")
    return problems


DIGEST_FIELDS = ("weights_digest", "tokenizer_digest", "config_digest")


def check_model_versions(events: Events) -> list[str]:
    problems = []
    for version in ModelVersion.objects.all():
        event = events.first(Verb.MODEL_VERSION_DIGESTED, version.pk)
        if event is None:
            if version.weights_digest:
                problems.append(f"model version {version}: digests the ledger never recorded")
            continue
        recorded = {name: event.data[name] for name in DIGEST_FIELDS if name in event.data}
        if isinstance(event.data.get("files"), dict):
            recorded["file_digests"] = event.data["files"]
        if any(getattr(version, name) != value for name, value in recorded.items()):
            problems.append(f"model version {version}: its digests differ from the ledger's")
    return problems


def check_lenses(events: Events) -> list[str]:
    problems = []
    for lens in Lens.objects.exclude(digest=""):
        event = events.first(Verb.LENS_VALIDATED, lens.pk)
        if event is None or event.data.get("digest") != lens.digest:
            problems.append(f"{lens}: its digest differs from its lens.validated event")
    return problems


# --- keys, decisions, roles -----------------------------------------------------------------


def check_keys(events: Events) -> list[str]:
    problems = []
    for key in ReviewerKey.objects.select_related("user"):
        event = events.first(Verb.REVIEWER_KEY_REGISTERED, key.pk)
        if event is None or event.actor_id != key.user_id:
            problems.append(f"key {key.key_id}: its owner differs from its registration event")
        elif event.data.get("public_key", key.public_key) != key.public_key:
            problems.append(f"key {key.key_id}: its public key differs from the one registered")
        elif bool(events.of(Verb.REVIEWER_KEY_REVOKED, key.pk)) != (key.revoked_at is not None):
            problems.append(f"key {key.key_id}: its revocation differs from the ledger's")
    return problems


def check_decisions(events: Events) -> list[str]:
    problems = []
    decisions = list(Decision.objects.select_related("key"))
    for decision in decisions:
        problem = _decision_problem(decision, events.first(Verb.DECISION_RECORDED, decision.pk))
        if problem:
            problems.append(problem)
    problems += _missing_rows(
        events, Verb.DECISION_RECORDED, (str(d.pk) for d in decisions), "decision"
    )
    return problems


def _decision_problem(decision: Decision, event) -> str | None:
    label = f"decision {decision.id} ({decision.decision} by user {decision.reviewer_id})"
    try:
        opened = signing.open_envelope(decision.envelope)
        signing.verify_signature(
            signing.b64decode(decision.key.public_key, "key"), opened.payload, opened.signature
        )
    except signing.SignatureError as exc:
        return f"{label}: its envelope does not verify ({exc})"
    if event is None or event.data.get("payload_sha256") != sha256_hex(opened.payload):
        return f"{label}: it is not the decision the ledger recorded"
    if not decision.reviewer_id == event.actor_id == decision.key.user_id:
        return f"{label}: its reviewer is not the ledger event's actor and the key's owner"
    if not _same_as_signed(decision, opened.statement):
        return f"{label}: the row differs from the statement its reviewer signed"
    return None


def _same_as_signed(decision: Decision, statement: dict) -> bool:
    predicate = statement["predicate"]
    stored = (
        decision.decision,
        decision.check_key or None,
        decision.rationale,
        decision.conditions,
        decision.evidence_digest,
        str(decision.release_id),
        decision.signed_at,
    )
    signed = (
        predicate["decision"]["type"],
        predicate["decision"]["check"],
        predicate["rationale"],
        predicate["conditions"],
        predicate["evidence_digest"],
        predicate["release"],
        datetime.fromisoformat(predicate["signed_at"]),
    )
    return stored == signed and decision.statement == statement


def check_roles(events: Events) -> list[str]:
    """Who holds a role now is who the ledger's account events say holds it: a membership
    written into the database directly (no event) would let a sockpuppet's approval count."""
    expected = _replayed_roles(events)
    problems = []
    for user in get_user_model()._default_manager.prefetch_related("groups"):
        held = {g.name for g in user.groups.all()} & {r.value for r in Role}
        flags = {"is_active": user.is_active, "is_superuser": user.is_superuser}
        want = expected.get(str(user.pk))
        if want is None:
            if held or user.is_superuser:
                problems.append(f"user {user.get_username()} holds roles no ledger event granted")
        elif (held, flags) != (want["roles"], want["flags"]):
            problems.append(
                f"user {user.get_username()}: roles or account flags differ from the ledger's "
                f"(held {sorted(held)}, ledger {sorted(want['roles'])})"
            )
    return problems


def _replayed_roles(events: Events) -> dict[str, dict]:
    state: dict[str, dict] = {}
    verbs = (Verb.USER_CREATED, Verb.USER_ROLE_GRANTED, Verb.USER_ROLE_REMOVED)
    account = sorted(
        (e for v in (*verbs, Verb.USER_FLAG_CHANGED) for e in events.by_verb.get(v.value, [])),
        key=lambda e: e.seq,
    )
    for event in account:
        user = state.setdefault(event.target_id, {"roles": set(), "flags": {}})
        if event.verb == Verb.USER_CREATED:
            user["flags"] = {
                "is_active": event.data["is_active"],
                "is_superuser": event.data["is_superuser"],
            }
        elif event.verb == Verb.USER_FLAG_CHANGED:
            user["flags"][event.data["flag"]] = event.data["to"]
        elif event.verb == Verb.USER_ROLE_GRANTED:
            user["roles"].add(event.data["role"])
        else:
            user["roles"].discard(event.data["role"])
    return state


def check_all() -> list[str]:
    events = Events()
    return [
        *check_columns(),
        *check_runs(events),
        *check_evidence_files(),
        *check_policies(events),
        *check_releases(events),
        *check_model_versions(events),
        *check_lenses(events),
        *check_keys(events),
        *check_decisions(events),
        *check_roles(events),
    ]
