"""The audit ledger: every state change writes one AuditEvent in the same transaction.

Events are numbered 1, 2, 3 … without gaps. Each event's bytes are the RFC 8785 canonical JSON
of {seq, at, actor, verb, target_type, target_id, data, prev_hash}; its entry_hash is the sha256
of those bytes and the next event's prev_hash (the first event's prev_hash is 64 zeros). The
events are also the leaves of an RFC 6962 Merkle tree (audits.merkle); the server signs
checkpoints of the tree (size, root, time) with its own Ed25519 key.

The checkpoint key can be rotated (audits.actions.ledger_keys): the old key and the new one
both sign a rotation statement (the tree size and root at the handover and both public keys),
written to the ledger as a `ledger.key_rotated` event and to the retired-keys file
(ASSAY_LEDGER_RETIRED_KEYS_FILE). A checkpoint verifies with the key its key_id names, only for
the tree sizes that key held (key_ring).
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from audits import merkle, signing
from audits.canonical import canonical_json
from audits.models import AuditEvent, LedgerCheckpoint, LedgerHead, MerkleNode

GENESIS = "0" * 64


class LedgerIntegrityError(Exception):
    """The stored ledger no longer matches what the server signed."""


class Verb(StrEnum):
    """Every kind of ledger event. Only audits.actions (and the checkpoint signer) write them."""

    MODEL_VERSION_REGISTERED = "model_version.registered"
    MODEL_VERSION_DESCRIBED = "model_version.described"
    MODEL_VERSION_DIGESTED = "model_version.digested"
    MODEL_VERSION_DIGEST_FAILED = "model_version.digest_failed"
    POLICY_DRAFTED = "policy.drafted"
    POLICY_EDITED = "policy.edited"
    POLICY_PUBLISHED = "policy.published"
    RELEASE_OPENED = "release.opened"
    RELEASE_WITHDRAWN = "release.withdrawn"
    RELEASE_STATE_CHANGED = "release.state_changed"
    RELEASE_TRUST_WARNINGS = "release.trust_warnings"
    CHECK_RUN_QUEUED = "check_run.queued"
    CHECK_RUN_STARTED = "check_run.started"
    CHECK_RUN_SUCCEEDED = "check_run.succeeded"
    CHECK_RUN_ERRORED = "check_run.errored"
    CHECK_RUN_CANCELLED = "check_run.cancelled"
    CHECK_RUN_REQUEUED = "check_run.requeued"
    EVIDENCE_INTEGRITY_FAILED = "evidence.integrity_failed"
    REVIEWER_KEY_REGISTERED = "reviewer_key.registered"
    REVIEWER_KEY_REVOKED = "reviewer_key.revoked"
    DECISION_RECORDED = "decision.recorded"
    LENS_REGISTERED = "lens.registered"
    LENS_TRAINING_REQUESTED = "lens.training_requested"
    LENS_VALIDATED = "lens.validated"
    LENS_FAILED = "lens.failed"
    CATALOG_FEATURE_REVIEWED = "catalog_feature.reviewed"
    CATALOG_FEATURE_PROPOSED = "catalog_feature.proposed"
    CATALOG_CARRIED = "catalog.carried"
    POLICY_ASSIGNED = "policy.assigned"
    DOSSIER_EXPORTED = "dossier.exported"
    USER_CREATED = "user.created"
    USER_ROLE_GRANTED = "user.role_granted"
    USER_ROLE_REMOVED = "user.role_removed"
    USER_FLAG_CHANGED = "user.flag_changed"
    USER_PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - an event name
    USER_TOKEN_CREATED = "user.token_created"  # noqa: S105 - an event name
    LEDGER_KEY_ROTATED = "ledger.key_rotated"


# Changes to a person's account that bear on whether their signature can be trusted.
ACCOUNT_VERBS = (
    Verb.USER_CREATED,
    Verb.USER_ROLE_GRANTED,
    Verb.USER_ROLE_REMOVED,
    Verb.USER_FLAG_CHANGED,
    Verb.USER_PASSWORD_CHANGED,
    Verb.USER_TOKEN_CREATED,
    Verb.REVIEWER_KEY_REGISTERED,
    Verb.REVIEWER_KEY_REVOKED,
)


def actor_label(actor) -> str:
    if actor is None:
        return "system"
    return actor.get_username()


def timestamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def entry_bytes(
    *,
    seq: int,
    at: datetime,
    actor: str,
    verb: str,
    target_type: str,
    target_id: str,
    data: dict,
    prev_hash: str,
) -> bytes:
    return canonical_json(
        {
            "seq": seq,
            "at": timestamp(at),
            "actor": actor,
            "verb": verb,
            "target_type": target_type,
            "target_id": target_id,
            "data": data,
            "prev_hash": prev_hash,
        }
    )


def event_bytes(event: AuditEvent) -> bytes:
    return entry_bytes(
        seq=event.seq,
        at=event.at,
        actor=event.actor_label,
        verb=event.verb,
        target_type=event.target_type,
        target_id=event.target_id,
        data=event.data,
        prev_hash=event.prev_hash,
    )


def record(
    verb: Verb, *, actor, target: models.Model, data: dict[str, Any] | None = None
) -> AuditEvent:
    if not transaction.get_connection().in_atomic_block:
        # An event outside the change's transaction could survive a rolled-back change.
        raise RuntimeError(f"ledger event {verb!r} must be written inside the change's transaction")
    verb = Verb(verb)  # an unknown verb is a programming error, refused here
    head, _ = LedgerHead.objects.select_for_update().get_or_create(pk=1)
    # Stored exactly as hashed: the canonical round trip fixes types (UUIDs, tuples) up front.
    data = json.loads(canonical_json(data or {}))
    fields: dict[str, Any] = {
        "seq": head.seq + 1,
        "at": timezone.now(),
        "actor": actor_label(actor),
        "verb": verb.value,
        "target_type": target._meta.model_name,
        "target_id": str(target.pk),
        "data": data,
        "prev_hash": head.head_hash,
    }
    body = entry_bytes(**fields)
    entry_hash = hashlib.sha256(body).hexdigest()
    event = AuditEvent.objects.create(
        seq=fields["seq"],
        at=fields["at"],
        actor=actor if actor is not None and actor.pk else None,
        actor_label=fields["actor"],
        verb=verb.value,
        target_type=fields["target_type"],
        target_id=fields["target_id"],
        data=data,
        prev_hash=head.head_hash,
        entry_hash=entry_hash,
        body=body.decode("utf-8"),
    )
    frontier = _append_leaf(event.seq - 1, merkle.leaf_hash(body), list(head.frontier))
    LedgerHead.objects.filter(pk=1).update(seq=event.seq, head_hash=entry_hash, frontier=frontier)
    return event


# --- the Merkle tree and proofs -------------------------------------------------------------


def _append_leaf(index: int, leaf: bytes, frontier: list) -> list:
    """Store leaf `index` and every perfect subtree it completes; return the new frontier.

    The frontier works like a binary counter: frontier[level] is the root of the complete
    subtree of 2**level leaves on the tree's right edge, or None. Adding a leaf carries through
    the occupied levels, each carry completing (and storing) one node a level up."""
    nodes = [MerkleNode(level=0, index=index, hash=leaf.hex())]
    carry, level = leaf, 0
    while level < len(frontier) and frontier[level] is not None:
        carry = merkle.node_hash(bytes.fromhex(frontier[level]), carry)
        frontier[level] = None
        level += 1
        nodes.append(MerkleNode(level=level, index=index >> level, hash=carry.hex()))
    if level == len(frontier):
        frontier.append(carry.hex())
    else:
        frontier[level] = carry.hex()
    MerkleNode.objects.bulk_create(nodes)
    return frontier


def leaf_hashes(tree_size: int | None = None) -> list[bytes]:
    """Every leaf hash, recomputed from the events' stored bytes (for verification)."""
    events = AuditEvent.objects.order_by("seq")
    if tree_size is not None:
        events = events.filter(seq__lte=tree_size)
    bodies = events.values_list("body", flat=True).iterator(chunk_size=5000)
    return [merkle.leaf_hash(body.encode("utf-8")) for body in bodies]


def tree_size() -> int:
    head = LedgerHead.objects.filter(pk=1).first()
    return head.seq if head else 0


class StoredTree:
    """Subtree hashes of the stored tree: each computation first collects the perfect nodes
    it needs, fetches them in one query, then hashes. O(log n) nodes for a root, O(log^2 n)
    at most for a proof, whatever the ledger's size."""

    def __init__(self) -> None:
        self._nodes: dict[tuple[int, int], bytes] = {}

    def compute(self, fn):
        wanted: set[tuple[int, int]] = set()

        def planning(level: int, index: int) -> bytes:
            wanted.add((level, index))
            return b""

        fn(merkle.composed(planning))
        self._fetch(wanted - self._nodes.keys())
        return fn(merkle.composed(self._node))

    def _node(self, level: int, index: int) -> bytes:
        try:
            return self._nodes[(level, index)]
        except KeyError:
            raise ValueError(f"the ledger has no Merkle node {level}/{index}") from None

    def _fetch(self, keys: set[tuple[int, int]]) -> None:
        by_level: dict[int, list[int]] = {}
        for level, index in keys:
            by_level.setdefault(level, []).append(index)
        query = models.Q(pk__in=[])
        for level, indices in by_level.items():
            query |= models.Q(level=level, index__in=indices)
        for level, index, value in MerkleNode.objects.filter(query).values_list(
            "level", "index", "hash"
        ):
            self._nodes[(level, index)] = bytes.fromhex(value)


def root_hash(size: int) -> bytes:
    return StoredTree().compute(lambda subtree: merkle.tree_root(size, subtree))


def _bounded(size: int) -> None:
    current = tree_size()
    if not 1 <= size <= current:
        raise ValueError(f"tree_size must be between 1 and {current} (the ledger's size)")


def inclusion(seq: int, size: int) -> dict:
    _bounded(size)
    if not 1 <= seq <= size:
        raise ValueError(f"seq must be between 1 and tree_size ({size})")
    # One computation, so the nodes of the path, the leaf and the root come in one query.
    path, leaf, root = StoredTree().compute(
        lambda subtree: (
            merkle.inclusion_path(seq - 1, size, subtree),
            subtree(seq - 1, 1),
            merkle.tree_root(size, subtree),
        )
    )
    return {
        "seq": seq,
        "leaf_index": seq - 1,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "root_hash": root.hex(),
        "audit_path": [node.hex() for node in path],
    }


def consistency(first: int, second: int) -> dict:
    _bounded(second)
    if not 1 <= first <= second:
        raise ValueError(f"first must be between 1 and second ({second})")
    proof, first_root, second_root = StoredTree().compute(
        lambda subtree: (
            merkle.consistency_path(first, second, subtree),
            merkle.tree_root(first, subtree),
            merkle.tree_root(second, subtree),
        )
    )
    return {
        "first": first,
        "second": second,
        "first_root": first_root.hex(),
        "second_root": second_root.hex(),
        "proof": [node.hex() for node in proof],
    }


# --- checkpoints signed by the server -------------------------------------------------------


def server_key():
    """The server's checkpoint key (ASSAY_LEDGER_KEY_FILE); made on first use if absent, unless
    the key was rotated before (a fresh key would not be vouched for by the rotation chain)."""
    path = Path(settings.ASSAY_LEDGER_KEY_FILE)
    if not path.exists():
        if read_retired_keys():
            raise LedgerIntegrityError(
                f"the checkpoint key file {path} is missing, but the key was rotated before "
                f"(see {retired_keys_path()}): restore the key file from the backup it was "
                "kept with; a new key would not be vouched for by the rotation chain"
            )
        write_private_key(path, signing.generate_private_key())
    return signing.load_private_key(path)


def write_private_key(path: Path, key) -> None:
    """Install a private key file atomically, readable by its owner only."""
    atomic_write(Path(path), signing.private_key_pem(key), mode=0o600)


def atomic_write(path: Path, data: bytes, *, mode: int) -> None:
    """Write data to a temporary file beside path (created with `mode`), fsync it, and rename
    it over path: a reader sees the old file or the new one, never a part of either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def server_public_key() -> dict:
    raw = signing.raw_public_key(server_key().public_key())
    return {"algorithm": "ed25519", "public_key": signing.b64(raw), "key_id": signing.key_id(raw)}


def server_keys() -> dict:
    """The current checkpoint key and, oldest first, the keys it replaced, each with the
    rotation statement both keys signed (what a dossier carries as ledger/server-key.json)."""
    return {**server_public_key(), "retired": read_retired_keys()}


# --- rotating the checkpoint key ------------------------------------------------------------

# Prefixed so that a rotation signature can never pass for a checkpoint's (a checkpoint's body
# is bare JSON) nor a checkpoint signature for a rotation's.
ROTATION_CONTEXT = b"assay ledger key rotation v1\n"
RETIRED_KEYS_FORMAT = "assay-ledger-retired-keys/1"
ROTATION_FIELDS = frozenset(
    {"origin", "old_key_id", "old_public_key", "new_key_id", "new_public_key", "tree_size"}
    | {"root_hash"}
)


def rotation_message(statement: dict) -> bytes:
    """What both keys sign: the context line, then the statement's canonical JSON."""
    return ROTATION_CONTEXT + canonical_json(statement)


def retired_keys_path() -> Path:
    return Path(settings.ASSAY_LEDGER_RETIRED_KEYS_FILE)


def read_retired_keys() -> list[dict]:
    """The retired-keys file's entries, oldest first ([] when there is no file). Each entry:
    {key_id, public_key, statement, signatures: {old, new}}, the key it names being the
    statement's old key."""
    path = retired_keys_path()
    if not path.exists():
        return []
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LedgerIntegrityError(f"cannot read the retired-keys file {path}: {exc}") from None
    if (
        not isinstance(content, dict)
        or content.get("format") != RETIRED_KEYS_FORMAT
        or not isinstance(content.get("retired"), list)
        or not all(isinstance(entry, dict) for entry in content["retired"])
    ):
        raise LedgerIntegrityError(f"{path} is not an {RETIRED_KEYS_FORMAT} file")
    return content["retired"]


def write_retired_keys(entries: list[dict]) -> None:
    content = {"format": RETIRED_KEYS_FORMAT, "retired": entries}
    data = (json.dumps(content, indent=1, sort_keys=True) + "\n").encode("utf-8")
    atomic_write(retired_keys_path(), data, mode=0o644)


@dataclass(frozen=True)
class KeySpan:
    """A checkpoint key and the trees it may sign: more than `after` events and at most
    `until` (None for the current key)."""

    public_key: bytes
    after: int
    until: int | None

    def holds(self, size: int) -> bool:
        return size > self.after and (self.until is None or size <= self.until)


def key_ring(
    current: bytes,
    retired: list[dict],
    *,
    origin: str,
    root_at: Callable[[int], str | None] | None = None,
) -> tuple[dict[str, KeySpan], list[str]]:
    """The keys a checkpoint may be signed with, by key id, and the problems found. Walks the
    retired keys back from the current one: each entry's statement must verify with both its
    keys, hand over to the next key (the current one for the last entry), at a larger tree
    size than the entry before, with this ledger's origin (and, given root_at, the root this
    ledger has at that size). A key enters the ring only if every rotation from it to the
    current key holds; the walk stops at the first that does not."""
    current_id = signing.key_id(current)
    problems: list[str] = []
    parsed = []
    for position, entry in enumerate(retired, start=1):
        statement, problem = _rotation_problem(entry, origin)
        if problem:
            problems.append(f"retired key {position} ({entry.get('key_id')}): {problem}")
        parsed.append(statement)
    ring: dict[str, KeySpan] = {}
    expected, expected_public, until = current_id, current, None
    for position in range(len(retired), 0, -1):
        statement = parsed[position - 1]
        if statement is None:
            break
        size = statement["tree_size"]
        if statement["new_key_id"] != expected:
            problems.append(
                f"retired key {position} ({statement['old_key_id']}) handed over to "
                f"{statement['new_key_id']}, not to {expected}, the key after it: the chain of "
                "rotations is broken"
            )
            break
        if until is not None and size >= until:
            problems.append(
                f"retired key {position} ({statement['old_key_id']}) was retired at tree size "
                f"{size}, not before the key after it was ({until})"
            )
            break
        if statement["old_key_id"] in ring or statement["old_key_id"] == current_id:
            problems.append(
                f"retired key {position} ({statement['old_key_id']}) appears twice in the chain "
                "of rotations"
            )
            break
        root = root_at(size) if root_at else statement["root_hash"]
        if root != statement["root_hash"]:
            problems.append(
                f"retired key {position} ({statement['old_key_id']}) was handed over at tree "
                f"size {size} with root {statement['root_hash']}, but the ledger's root there is "
                f"{root}: the ledger before the rotation was rewritten"
            )
            break
        ring[expected] = KeySpan(expected_public, size, until)
        expected, until = statement["old_key_id"], size
        expected_public = signing.b64decode(statement["old_public_key"], "key")
    # The oldest key the walk reached: vouched for by the rotations after it, from the start.
    ring[expected] = KeySpan(expected_public, 0, until)
    return ring, problems


def _rotation_problem(entry: dict, origin: str) -> tuple[dict | None, str | None]:
    """The entry's statement if it is well-formed and both signatures verify."""
    statement = entry.get("statement")
    signatures = entry.get("signatures")
    if (
        not isinstance(statement, dict)
        or set(statement) != ROTATION_FIELDS
        or not isinstance(signatures, dict)
        or set(signatures) != {"old", "new"}
        or not isinstance(statement["tree_size"], int)
        or isinstance(statement["tree_size"], bool)
        or statement["tree_size"] < 1
        or not all(isinstance(statement[name], str) for name in ROTATION_FIELDS - {"tree_size"})
    ):
        return None, "not a rotation statement with an old and a new signature"
    if statement["origin"] != origin:
        return None, f"a rotation of another ledger ({statement['origin']!r}, not {origin!r})"
    if (entry.get("key_id"), entry.get("public_key")) != (
        statement["old_key_id"],
        statement["old_public_key"],
    ):
        return None, "the entry names another key than its rotation statement retires"
    message = rotation_message(statement)
    for role in ("old", "new"):
        try:
            raw = signing.b64decode(statement[f"{role}_public_key"], f"the {role} key")
            if signing.key_id(raw) != statement[f"{role}_key_id"]:
                return None, f"the {role} key id is not the sha256 of the {role} public key"
            signing.verify_signature(
                raw, message, signing.b64decode(signatures[role], "signature"), pae=False
            )
        except (signing.SignatureError, ValueError):
            return None, (
                f"the {role} key's signature on the rotation statement does not verify (the "
                "statement was changed, or not signed by that key)"
            )
    return statement, None


def published_keys() -> dict:
    """What GET /api/v1/ledger/public-key/ answers: the current checkpoint key (the fields it
    always had) and, oldest first, each key it replaced with the tree sizes it may have signed
    (null when the chain of rotations from it to the current key does not verify), when and by
    which ledger event it was retired, and the rotation statement with both signatures, so
    that a verifier can check the chain itself instead of trusting this list."""
    current = server_public_key()
    retired = read_retired_keys()
    ring, _ = key_ring(
        signing.b64decode(current["public_key"], "key"),
        retired,
        origin=settings.ASSAY_LEDGER_ORIGIN,
    )
    rotations = list(
        AuditEvent.objects.filter(verb=Verb.LEDGER_KEY_ROTATED).only("seq", "at", "data")
    )
    return {**current, "retired": [_published_retired(e, ring, rotations) for e in retired]}


def _published_retired(entry: dict, ring: dict[str, KeySpan], rotations: list) -> dict:
    """One retired key as the public-key endpoint lists it. Only named fields are copied from
    the retired-keys file: whatever else someone wrote into it is not served."""
    statement, signatures = entry.get("statement"), entry.get("signatures")
    statement = statement if isinstance(statement, dict) else {}
    signatures = signatures if isinstance(signatures, dict) else {}
    recorded = {"statement": statement, "signatures": signatures}
    event = next((e for e in rotations if e.data == recorded), None)
    span = _retired_span(entry, ring)
    return {
        "algorithm": "ed25519",
        "key_id": entry.get("key_id"),
        "public_key": entry.get("public_key"),
        "retired_at": timestamp(event.at) if event else None,
        "rotation_event": event.seq if event else None,
        "valid_for": None
        if span is None
        else {"min_tree_size": span.after + 1, "max_tree_size": span.until},
        "statement": {k: v for k, v in statement.items() if k in ROTATION_FIELDS},
        "signatures": {k: v for k, v in signatures.items() if k in ("old", "new")},
    }


def _retired_span(entry: dict, ring: dict[str, KeySpan]) -> KeySpan | None:
    """The trees a retired key may have signed, if the chain of rotations vouches for the very
    key the entry names (its id and public key) and it is retired (the current key's span has
    no end)."""
    span = ring.get(str(entry.get("key_id")))
    if span is None or span.until is None:
        return None
    if signing.b64(span.public_key) != entry.get("public_key"):
        return None
    return span


@transaction.atomic
def checkpoint() -> LedgerCheckpoint:
    """A signed checkpoint of the tree as it is now (reused if the tree has not grown)."""
    size = LedgerHead.objects.select_for_update().get_or_create(pk=1)[0].seq
    existing = LedgerCheckpoint.objects.filter(tree_size=size).first()
    if existing:
        # Never hand out an old signature over a tree that is no longer the ledger's.
        if json.loads(existing.body)["root_hash"] != root_hash(size).hex():
            raise LedgerIntegrityError(
                f"the ledger no longer has the root the server signed at tree size {size}: "
                "it was changed behind the application's back; run verify_ledger"
            )
        return existing
    key = server_key()
    signer = signing.key_id(signing.raw_public_key(key.public_key()))
    if signer in {entry.get("key_id") for entry in read_retired_keys()}:
        raise LedgerIntegrityError(
            f"the checkpoint key file holds key {signer}, which was retired: a retired key "
            "signs no new checkpoints (was an old key file restored?)"
        )
    body = canonical_json(
        {
            "origin": settings.ASSAY_LEDGER_ORIGIN,
            "tree_size": size,
            "root_hash": root_hash(size).hex(),
            "timestamp": timestamp(timezone.now()),
        }
    )
    fields = json.loads(body)
    point = LedgerCheckpoint.objects.create(
        tree_size=size,
        root_hash=fields["root_hash"],
        timestamp=datetime.fromisoformat(fields["timestamp"]),
        key_id=signer,
        body=body.decode(),
        signature=signing.b64(key.sign(body)),
    )
    transaction.on_commit(lambda: append_external(point))
    return point


def signed_checkpoint(point: LedgerCheckpoint) -> dict:
    """A checkpoint as it travels: the signed body, its signature and the signer's key id."""
    return {"body": point.body, "signature": point.signature, "key_id": point.key_id}


def append_external(point: LedgerCheckpoint) -> None:
    """Append the checkpoint to the deployment's checkpoint log (ASSAY_CHECKPOINT_LOG), a
    file outside the database: whoever deletes the ledger's tail and its checkpoint rows
    still meets the checkpoints written here (and any copies others keep)."""
    path = Path(settings.ASSAY_CHECKPOINT_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(signed_checkpoint(point), sort_keys=True) + "\n"
    with path.open("a", encoding="utf-8") as log:
        log.write(line)
        log.flush()
        os.fsync(log.fileno())


def read_checkpoints(path: Path) -> list[dict]:
    """Signed checkpoints from a file: JSON lines as append_external writes them, or one
    JSON object (a checkpoint saved from the API)."""
    text = Path(path).read_text(encoding="utf-8").strip()
    if text.startswith("{") and "\n" not in text:
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]
