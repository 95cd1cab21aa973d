"""The cryptographic pass of verify_ledger: every event's stored bytes against its hash and the
chain, the stored Merkle nodes against nodes recomputed from those bytes, and every signed
checkpoint (in the database and in any file held elsewhere) against the recomputed tree.

Checkpoints are judged by their signed body only; their other columns are an index that the
records pass compares with it. Each is checked with the key its key_id names: the current
checkpoint key, or a retired one that the chain of rotations vouches for, and only for the tree
sizes that key held (audits.ledger.key_ring); the retired-keys file must say what the ledger's
ledger.key_rotated events say."""

import hashlib
import json
from dataclasses import dataclass, field

from django.conf import settings

from audits import ledger, merkle, signing
from audits.models import AuditEvent, LedgerCheckpoint, LedgerHead, MerkleNode


@dataclass
class Tree:
    """Perfect-subtree roots recomputed from the events: levels[l][i] covers leaves
    i * 2**l ... (i + 1) * 2**l - 1."""

    levels: list[list[bytes]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.levels[0]) if self.levels else 0

    def root(self, size: int) -> bytes:
        return merkle.tree_root(size, merkle.composed(lambda lvl, i: self.levels[lvl][i]))


def _build(leaves: list[bytes]) -> Tree:
    sha256 = hashlib.sha256
    levels = [leaves]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append(
            [
                sha256(b"\x01" + a + b).digest()
                for a, b in zip(below[0:-1:2], below[1::2], strict=True)
            ]
        )
    return Tree(levels)


def check_events() -> tuple[list[str], Tree]:
    """Each event's body hashes to its entry_hash, and prev_hash chains the events; also
    returns the recomputed tree. Stops at the first broken event. (The hot loop keeps to
    local names: it runs once per event of a ledger of millions.)"""
    sha256 = hashlib.sha256
    leaves: list[bytes] = []
    append = leaves.append
    previous, expected = ledger.GENESIS, 1
    rows = AuditEvent.objects.order_by("seq").values_list("seq", "body", "entry_hash", "prev_hash")
    for seq, body, entry_hash, prev_hash in rows.iterator(chunk_size=5000):
        raw = body.encode("utf-8")
        if seq != expected or prev_hash != previous or sha256(raw).hexdigest() != entry_hash:
            problem = _event_problem(seq, expected, body, entry_hash, prev_hash, previous)
            return [problem or f"event #{seq} does not verify"], _build(leaves)
        append(sha256(b"\x00" + raw).digest())
        previous, expected = entry_hash, expected + 1
    problems = []
    head = LedgerHead.objects.filter(pk=1).first()
    if head and (head.seq, head.head_hash) != (expected - 1, previous):
        problems.append(
            f"the ledger head says #{head.seq} but the chain ends at #{expected - 1}: events "
            "were removed or added out of band"
        )
    return problems, _build(leaves)


def _event_problem(seq, expected, body, entry_hash, prev_hash, previous) -> str | None:
    if seq != expected:
        return f"event #{expected} is missing (the next stored event is #{seq})"
    if prev_hash != previous:
        return f"event #{seq} does not follow the chain: its prev_hash is not #{seq - 1}'s hash"
    if hashlib.sha256(body.encode("utf-8")).hexdigest() != entry_hash:
        return f"event #{seq} does not match its hash: its bytes were changed after writing"
    return None


def check_stored_nodes(tree: Tree) -> list[str]:
    """The stored perfect-subtree roots (what proofs and checkpoints are built from) are the
    ones the events give, and there are no others: one scan in table order, each row checked
    against its recomputed node and marked seen, so memory stays flat."""
    levels = tree.levels
    seen = [bytearray(len(nodes)) for nodes in levels]
    rows = MerkleNode.objects.order_by().values_list("level", "index", "hash")
    for level, index, value in rows.iterator(chunk_size=20000):
        if level >= len(levels) or not 0 <= index < len(levels[level]):
            return [f"the ledger stores a Merkle node {level}/{index} outside the tree"]
        if levels[level][index].hex() != value:
            return [
                f"the stored Merkle node {level}/{index} differs from the one the events "
                "give: proofs served from it would not verify"
            ]
        seen[level][index] = 1
    for level, marks in enumerate(seen):
        if 0 in marks:
            return [f"the ledger is missing Merkle nodes of level {level}"]
    return []


def check_keys(tree: Tree) -> tuple[dict[str, ledger.KeySpan], list[str]]:
    """The checkpoint keys by key id (the current one and the retired ones the chain of
    rotations vouches for, each with the tree sizes it held), and what is wrong with them."""
    current = signing.raw_public_key(ledger.server_key().public_key())
    problems: list[str] = []
    try:
        retired = ledger.read_retired_keys()
    except ledger.LedgerIntegrityError as exc:
        retired, problems = [], [str(exc)]

    def root_at(size: int) -> str | None:
        return tree.root(size).hex() if 1 <= size <= tree.size else None

    ring, found = ledger.key_ring(
        current, retired, origin=settings.ASSAY_LEDGER_ORIGIN, root_at=root_at
    )
    problems += found
    return ring, problems + _rotations_agree(retired, tree)


def _rotations_agree(retired: list[dict], tree: Tree) -> list[str]:
    """The retired-keys file lists exactly the rotations the ledger records, in order."""
    rows = AuditEvent.objects.filter(verb=ledger.Verb.LEDGER_KEY_ROTATED, seq__lte=tree.size)
    recorded = []
    for seq, body in sorted(rows.values_list("seq", "body")):
        try:
            recorded.append((seq, json.loads(body)["data"]))
        except (ValueError, KeyError, TypeError):
            recorded.append((seq, None))  # the chain pass names the changed event
    problems = []
    for position in range(max(len(recorded), len(retired))):
        if position >= len(recorded):
            problems.append(
                f"the retired-keys file retires key {retired[position].get('key_id')}, but no "
                "ledger.key_rotated event in the ledger does: a key was added to the file "
                "outside a rotation"
            )
            continue
        seq, data = recorded[position]
        statement = data.get("statement") if isinstance(data, dict) else None
        named = statement.get("old_key_id") if isinstance(statement, dict) else None
        if position >= len(retired):
            problems.append(
                f"ledger event #{seq} (ledger.key_rotated) retired key {named}, but the "
                "retired-keys file does not list it: restore the file from the backup of the "
                "key file"
            )
            continue
        entry = retired[position]
        if data != {"statement": entry.get("statement"), "signatures": entry.get("signatures")}:
            problems.append(
                f"the retired-keys file's entry {position + 1} (key {entry.get('key_id')}) is not "
                f"the rotation ledger event #{seq} recorded"
            )
        elif not isinstance(statement, dict) or statement.get("tree_size") != seq - 1:
            problems.append(
                f"ledger event #{seq} (ledger.key_rotated) hands over at tree size "
                f"{statement.get('tree_size') if isinstance(statement, dict) else None}, not at "
                f"the {seq - 1} events before it"
            )
    return problems


def _checkpoint_problem(
    point: dict, tree: Tree, where: str, ring: dict[str, ledger.KeySpan]
) -> str | None:
    key_id = point.get("key_id")
    if key_id is None:  # saved without its key id: only the current key can vouch for it
        key_id = next(name for name, span in ring.items() if span.until is None)
    span = ring.get(key_id) if isinstance(key_id, str) else None
    if span is None:
        return (
            f"{where}: it names key {key_id}, which is neither the current checkpoint key nor a "
            "retired one that a verified rotation handed over from"
        )
    try:
        signing.Ed25519PublicKey.from_public_bytes(span.public_key).verify(
            signing.b64decode(point.get("signature"), "signature"), point["body"].encode()
        )
        body = json.loads(point["body"])
        size, root_hash = int(body["tree_size"]), str(body["root_hash"])
    except (signing.InvalidSignature, signing.SignatureError, KeyError, ValueError, TypeError):
        return f"{where}: its signature does not verify with the key it names ({key_id})"
    if not span.holds(size):
        if span.until is not None and size > span.until:
            return (
                f"{where}: it is signed by retired key {key_id} for a tree of {size} events, "
                f"but that key was retired at {span.until}: a retired key signs nothing after "
                "its rotation (a stolen or restored old key?)"
            )
        return (
            f"{where}: it is signed by key {key_id} for a tree of {size} events, but that key "
            f"only took over after {span.after}"
        )
    if size > tree.size:
        return (
            f"{where}: it signs a tree of {size} events but the ledger has {tree.size}: events "
            f"#{tree.size + 1} to #{size} were deleted"
        )
    if tree.root(size).hex() != root_hash:
        return (
            f"{where}: the ledger no longer has the root signed at tree size {size}: events up "
            f"to #{size} were rewritten"
        )
    return None


def check_checkpoints(tree: Tree, external: list[tuple[str, dict]]) -> list[str]:
    """The checkpoint keys, every stored checkpoint (its signed body; the columns must say the
    same) and every checkpoint held outside the database."""
    ring, problems = check_keys(tree)
    for point in LedgerCheckpoint.objects.order_by("tree_size"):
        where = f"checkpoint at tree size {point.tree_size}"
        problem = _checkpoint_problem(ledger.signed_checkpoint(point), tree, where, ring)
        if problem is None and not _columns_agree(point):
            problem = f"{where}: its columns differ from the body the server signed"
        if problem:
            problems.append(problem)
    for where, held in external:
        problem = _checkpoint_problem(held, tree, where, ring)
        if problem:
            problems.append(problem)
    return problems


def _columns_agree(point: LedgerCheckpoint) -> bool:
    body = json.loads(point.body)
    return (point.tree_size, point.root_hash) == (body["tree_size"], body["root_hash"])
