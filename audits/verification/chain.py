"""The cryptographic pass of verify_ledger: every event's stored bytes against its hash and the
chain, the stored Merkle nodes against nodes recomputed from those bytes, and every signed
checkpoint (in the database and in any file held elsewhere) against the recomputed tree.

Checkpoints are judged by their signed body only; their other columns are an index that the
records pass compares with it."""

import hashlib
import json
from dataclasses import dataclass, field

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


def _checkpoint_problem(point: dict, tree: Tree, where: str) -> str | None:
    public = signing.raw_public_key(ledger.server_key().public_key())
    try:
        signing.Ed25519PublicKey.from_public_bytes(public).verify(
            signing.b64decode(point.get("signature"), "signature"), point["body"].encode()
        )
        body = json.loads(point["body"])
        size, root_hash = int(body["tree_size"]), str(body["root_hash"])
    except (signing.InvalidSignature, signing.SignatureError, KeyError, ValueError, TypeError):
        return f"{where}: its signature does not verify with the server's key"
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
    """Every stored checkpoint (its signed body; the columns must say the same) and every
    checkpoint held outside the database."""
    problems = []
    for point in LedgerCheckpoint.objects.order_by("tree_size"):
        where = f"checkpoint at tree size {point.tree_size}"
        problem = _checkpoint_problem(ledger.signed_checkpoint(point), tree, where)
        if problem is None and not _columns_agree(point):
            problem = f"{where}: its columns differ from the body the server signed"
        if problem:
            problems.append(problem)
    for where, held in external:
        problem = _checkpoint_problem(held, tree, where)
        if problem:
            problems.append(problem)
    return problems


def _columns_agree(point: LedgerCheckpoint) -> bool:
    body = json.loads(point.body)
    return (point.tree_size, point.root_hash) == (body["tree_size"], body["root_hash"])
