"""RFC 6962 / RFC 9162 Merkle tree hashes, inclusion and consistency proofs, and their checks.

Standard library only, so an auditor's offline verifier can use this file on its own.
Leaf hash: sha256(0x00 || entry bytes); node hash: sha256(0x01 || left || right).
"""

import hashlib
from collections.abc import Callable

# MTH(D[start:start + n]): the Merkle tree hash of n consecutive leaves.
Subtree = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over leaf hashes."""
    return tree_root(len(leaves), of_leaves(leaves))


def inclusion_proof(index: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 section 2.1.1."""
    return inclusion_path(index, len(leaves), of_leaves(leaves))


def consistency_proof(first: int, leaves: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 6962 section 2.1.2."""
    return consistency_path(first, len(leaves), of_leaves(leaves))


# The same algorithms over any source of subtree hashes: a list of leaves (above), or stored
# perfect-subtree roots (composed below), which makes roots and proofs O(log n) lookups.


def of_leaves(leaves: list[bytes]) -> Subtree:
    def subtree(start: int, n: int) -> bytes:
        if n == 1:
            return leaves[start]
        k = _split(n)
        return node_hash(subtree(start, k), subtree(start + k, n - k))

    return subtree


def composed(perfect: Callable[[int, int], bytes]) -> Subtree:
    """MTH of any range from perfect(level, index), the root of the aligned perfect subtree
    of 2**level leaves starting at index * 2**level. RFC 6962 splits every range at the
    largest power of two below its size, so its left part is always such a subtree."""

    def subtree(start: int, n: int) -> bytes:
        if n & (n - 1) == 0 and start % n == 0:
            return perfect(n.bit_length() - 1, start // n)
        k = _split(n)
        return node_hash(subtree(start, k), subtree(start + k, n - k))

    return subtree


def tree_root(size: int, subtree: Subtree) -> bytes:
    return subtree(0, size) if size else hashlib.sha256(b"").digest()


def inclusion_path(index: int, size: int, subtree: Subtree, start: int = 0) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of {size} leaves")
    if size == 1:
        return []
    k = _split(size)
    if index < k:
        return [*inclusion_path(index, k, subtree, start), subtree(start + k, size - k)]
    return [*inclusion_path(index - k, size - k, subtree, start + k), subtree(start, k)]


def consistency_path(first: int, size: int, subtree: Subtree) -> list[bytes]:
    if not 0 < first <= size:
        raise ValueError(f"first tree size {first} must be between 1 and {size}")
    return _subproof(first, 0, size, True, subtree)


def _subproof(m: int, start: int, n: int, complete: bool, subtree: Subtree) -> list[bytes]:
    if m == n:
        return [] if complete else [subtree(start, n)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, start, k, complete, subtree), subtree(start + k, n - k)]
    return [*_subproof(m - k, start + k, n - k, False, subtree), subtree(start, k)]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root_: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if not 0 < first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:  # a power of two: the first root is the proof's start
        proof = [first_root, *proof]
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == first_root and sr == second_root
