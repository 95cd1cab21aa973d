#!/usr/bin/env python3
"""Verify an Assay dossier bundle offline: python verify.py bundle.zip [--pdf dossier.pdf]

Needs Python 3.11 and the `cryptography` package, nothing else: no server, no Assay, no
network. It checks, and names whatever fails:

1. files: every file in the zip against manifest.json (sha256 and size), nothing unlisted;
   the PDF (dossier.pdf beside the bundle, or --pdf) against the sha256 the bundle records;
2. the ledger: the server's signed checkpoint (Ed25519, the bundled server key), every event's
   bytes against its hash, the hash chain among the bundled events, every event's RFC 6962
   inclusion proof against the signed root, and every earlier signed checkpoint's consistency
   proof (the ledger shown extends what the server signed before). An earlier checkpoint may
   be signed by a retired server key: it counts only if the chain of rotation statements (each
   signed by the retiring key and its successor) leads from that key to the current one, and
   only for the tree sizes that key held;
3. the records against the ledger: the release, model version digests, the policy (its digest
   recomputed, published before any run), each check run (status, verdict, its evidence
   manifest and every evidence file), reviewer keys, people's roles (replayed from account
   events), each decision (its DSSE signature with the bundled key, its statement against the
   records, the record against the statement);
4. the gate: recomputed from the bundled records alone, the rules of Assay's audits/gate.py,
   and compared with the answer the server gave when the dossier was made.

Exit status: 0 when everything verifies, 1 when anything does not (each failure is printed with
the record it concerns), 2 when the bundle cannot be read at all.

The few standard algorithms this needs are written out below (RFC 8785 canonical JSON, the DSSE
pre-authentication encoding, RFC 6962/9162 Merkle hashing), so an auditor can read every line
that decides a verdict. Assay's test suite checks that they agree with the server's own.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import math
import sys
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

FORMAT = "assay-dossier-bundle/1"
MANIFEST = "manifest.json"
PDF_DIGEST = "dossier-pdf.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://assay.example/release-decision/v1"
FINISHED = ("succeeded", "errored", "cancelled")
TERMINAL = {
    "succeeded": "check_run.succeeded",
    "errored": "check_run.errored",
    "cancelled": "check_run.cancelled",
}
ACCOUNT_VERBS = (
    "user.created",
    "user.role_granted",
    "user.role_removed",
    "user.flag_changed",
    "user.password_changed",
    "user.token_created",
    "reviewer_key.registered",
    "reviewer_key.revoked",
)
MAX_FILE_BYTES = 1 << 30
# What a checkpoint key rotation signs (as audits/ledger.py): this line, then the statement.
ROTATION_CONTEXT = b"assay ledger key rotation v1\n"
ROTATION_FIELDS = frozenset(
    {"origin", "old_key_id", "old_public_key", "new_key_id", "new_public_key", "tree_size"}
    | {"root_hash"}
)


# --- RFC 8785 canonical JSON (as audits/canonical.py) -------------------------------------


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("NaN and infinity have no JSON form")
    if value == 0:
        return "0"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    parts = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, parts.digits)).rstrip("0") or "0"
    point = len(parts.digits) + int(parts.exponent)
    sign = "-" if value < 0 else ""
    if 0 < point <= 21:
        whole, frac = digits[:point].ljust(point, "0"), digits[point:]
        return sign + whole + ("." + frac if frac else "")
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{body}e{'+' if exponent > 0 else '-'}{abs(exponent)}"


def _encode(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be"))
        return "{" + ",".join(f"{_encode(key)}:{_encode(value[key])}" for key in keys) + "}"
    raise ValueError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    return _encode(value).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_digest(value: Any) -> str:
    return sha256_hex(canonical_json(value))


# --- DSSE and Ed25519 ---------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what an envelope's signature covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def b64decode(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("not valid base64") from None


def ed25519_verifies(raw_public: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- RFC 6962 / 9162 Merkle tree (as audits/merkle.py) ------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
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
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: list[bytes]
) -> bool:
    """RFC 9162 section 2.1.4.2."""
    if not 0 < first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:
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


# --- the report ---------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def ok(self, message: str) -> None:
        self.lines.append(f"  ok    {message}")

    def note(self, message: str) -> None:
        self.lines.append(f"  note  {message}")

    def fail(self, message: str) -> None:
        self.lines.append(f"  FAIL  {message}")
        self.failures.append(message)

    def section(self, title: str) -> None:
        self.lines.append(f"\n{title}")

    def expect(self, condition: bool, message: str, ok: str | None = None) -> bool:
        if condition:
            if ok:
                self.ok(ok)
            return True
        self.fail(message)
        return False


class BundleError(Exception):
    """The bundle cannot be read at all."""


class Bundle:
    def __init__(self, path: Path) -> None:
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise BundleError(f"{path} is not a readable zip file: {exc}") from None
        self.files: dict[str, bytes] = {}
        self.bad_names: list[str] = []
        with archive:
            for info in archive.infolist():
                name = info.filename
                if info.is_dir():
                    continue
                if name.startswith(("/", "\\")) or ".." in name.split("/") or name in self.files:
                    self.bad_names.append(name)
                    continue
                if info.file_size > MAX_FILE_BYTES:
                    raise BundleError(f"{name} is larger than {MAX_FILE_BYTES} bytes")
                self.files[name] = archive.read(info)

    def json(self, name: str, default: Any = None) -> Any:
        data = self.files.get(name)
        if data is None:
            return default
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return default


# --- 1. files -----------------------------------------------------------------------------


def check_files(bundle: Bundle, report: Report) -> dict:
    report.section("Files")
    for name in bundle.bad_names:
        report.fail(f"file {name!r}: an unsafe or duplicated path inside the zip")
    manifest = bundle.json(MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        report.fail(f"{MANIFEST} is missing or is not an {FORMAT} manifest")
        return {}
    listed = {item["path"]: item for item in manifest.get("files", [])}
    for path, item in sorted(listed.items()):
        data = bundle.files.get(path)
        if data is None:
            report.fail(f"file {path}: listed in the manifest but missing from the bundle")
        elif (sha256_hex(data), len(data)) != (item.get("sha256"), item.get("size")):
            report.fail(f"file {path}: its sha256 or size differs from the manifest's")
    for path in sorted(set(bundle.files) - set(listed) - {MANIFEST, PDF_DIGEST}):
        report.fail(f"file {path}: in the bundle but not listed in the manifest")
    pdf = bundle.json(PDF_DIGEST, {})
    report.expect(
        pdf.get("manifest_sha256") == sha256_hex(bundle.files[MANIFEST]),
        f"{PDF_DIGEST} names another manifest than this bundle's",
    )
    report.ok(
        f"{len(listed)} files listed in the manifest (sha256 {sha256_hex(bundle.files[MANIFEST])})"
    )
    return manifest


def check_pdf(bundle: Bundle, pdf_path: Path | None, report: Report) -> None:
    report.section("The PDF")
    expected = bundle.json(PDF_DIGEST, {})
    if pdf_path is None or not pdf_path.is_file():
        report.note(
            f"no PDF checked: put dossier.pdf beside the bundle or pass --pdf "
            f"(the bundle expects sha256 {expected.get('sha256')})"
        )
        return
    data = pdf_path.read_bytes()
    report.expect(
        sha256_hex(data) == expected.get("sha256") and len(data) == expected.get("size"),
        f"the PDF {pdf_path.name}: its sha256 {sha256_hex(data)} is not the "
        f"{expected.get('sha256')} "
        "this bundle was made with (another or a changed PDF)",
        f"{pdf_path.name} is the PDF this bundle was made with (sha256 {sha256_hex(data)})",
    )


# --- 2. the ledger ------------------------------------------------------------------------


@dataclass
class Ledger:
    events: dict[int, dict] = field(default_factory=dict)  # seq -> parsed body
    size: int = 0
    root: bytes = b""
    server_key: bytes = b""
    # key id -> (public key, the tree sizes it held: more than after, at most until)
    keys: dict[str, tuple[bytes, int, int | None]] = field(default_factory=dict)
    origin: Any = None

    def of(self, verb: str, target: str) -> list[dict]:
        return [
            e
            for _, e in sorted(self.events.items())
            if (e["verb"], e["target_id"]) == (verb, target)
        ]

    def first(self, verb: str, target: str) -> dict | None:
        found = self.of(verb, target)
        return found[0] if found else None


def _signed_body(held: Any, key: bytes) -> dict | None:
    """The body of a signed checkpoint whose signature verifies with the server key."""
    try:
        body = held["body"].encode("utf-8")
        if not ed25519_verifies(key, b64decode(held["signature"]), body):
            return None
        parsed = json.loads(body)
        int(parsed["tree_size"]), bytes.fromhex(parsed["root_hash"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return parsed


def _held_body(held: Any, ledger: Ledger) -> tuple[dict | None, str]:
    """An earlier checkpoint's body if it verifies with the key it names (the current server
    key, or a retired one the rotation chain vouches for) and that key held its tree size;
    otherwise None and why not."""
    key_id = held.get("key_id") if isinstance(held, dict) else None
    if key_id is None:  # saved without its key id: only the current key can vouch for it
        key_id = sha256_hex(ledger.server_key)
    if not isinstance(key_id, str) or key_id not in ledger.keys:
        return None, (
            f"it names key {key_id}, neither the server's current key nor a retired one that a "
            "verified rotation handed over from"
        )
    key, after, until = ledger.keys[key_id]
    body = _signed_body(held, key)
    if body is None:
        return None, f"its signature does not verify with the key it names ({key_id[:16]}…)"
    size = int(body["tree_size"])
    if until is not None and size > until:
        return None, (
            f"it is signed by retired key {key_id[:16]}… for a tree of {size} events, but that "
            f"key was retired at {until}: a retired key signs nothing after its rotation"
        )
    if size <= after:
        return None, (
            f"it is signed by key {key_id[:16]}… for a tree of {size} events, but that key only "
            f"took over after {after}"
        )
    return body, ""


def _rotation_statement(entry: Any, origin: Any) -> tuple[dict | None, str]:
    """A retired key's rotation statement if it is well-formed and both keys signed it."""
    statement = entry.get("statement") if isinstance(entry, dict) else None
    signatures = entry.get("signatures") if isinstance(entry, dict) else None
    if (
        not isinstance(statement, dict)
        or set(statement) != ROTATION_FIELDS
        or not isinstance(signatures, dict)
        or set(signatures) != {"old", "new"}
        or type(statement["tree_size"]) is not int
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
    message = ROTATION_CONTEXT + canonical_json(statement)
    for role in ("old", "new"):
        try:
            raw = b64decode(statement[f"{role}_public_key"])
            good = sha256_hex(raw) == statement[f"{role}_key_id"] and ed25519_verifies(
                raw, b64decode(signatures[role]), message
            )
        except ValueError:
            good = False
        if not good:
            return None, (
                f"the {role} key's signature on the rotation statement does not verify (the "
                "statement was changed, or not signed by that key)"
            )
    return statement, ""


def check_key_chain(server: Any, report: Report, ledger: Ledger) -> None:
    """The server's retired checkpoint keys, walked back from the current one: each must have
    handed over to the next by a rotation statement both keys signed, recorded as the
    ledger.key_rotated event right after the handover's tree size (an event the signed tree
    includes), at a tree size the dossier's ledger extends (its consistency proof), before the
    next key's own rotation. Runs after check_events, which fills ledger.events."""
    retired = server.get("retired", []) if isinstance(server, dict) else []
    if not isinstance(retired, list):
        report.fail("ledger/server-key.json: its retired keys are not a list")
        retired = []
    expected, public, until = sha256_hex(ledger.server_key), ledger.server_key, None
    for position in range(len(retired), 0, -1):
        entry = retired[position - 1]
        statement, problem = _rotation_statement(entry, ledger.origin)
        where = f"retired server key {position}"
        if statement is None:
            report.fail(f"{where}: {problem}")
            break
        size = statement["tree_size"]
        if statement["new_key_id"] != expected:
            report.fail(
                f"{where} ({statement['old_key_id'][:16]}…) handed over to another key than the "
                "one after it: the chain of rotations is broken"
            )
            break
        if (until is not None and size >= until) or size >= ledger.size:
            report.fail(f"{where}: retired at tree size {size}, not before the key after it")
            break
        if statement["old_key_id"] in ledger.keys or statement["old_key_id"] == expected:
            report.fail(f"{where}: the key appears twice in the chain of rotations")
            break
        event = ledger.events.get(size + 1, {})
        recorded = {"statement": statement, "signatures": entry.get("signatures")}
        if (event.get("verb"), event.get("data")) != ("ledger.key_rotated", recorded):
            report.fail(
                f"{where} ({statement['old_key_id'][:16]}…): the bundle does not show the "
                f"ledger.key_rotated event #{size + 1} that retired it in the signed tree"
            )
            break
        before = report.failures[:]
        _consistent(
            report,
            ledger,
            {"tree_size": size, "root_hash": statement["root_hash"]},
            entry.get("consistency") if isinstance(entry.get("consistency"), dict) else {},
            f"{where}'s handover",
        )
        if report.failures != before:
            break
        ledger.keys[expected] = (public, size, until)
        expected, until = statement["old_key_id"], size
        public = b64decode(statement["old_public_key"])
    ledger.keys[expected] = (public, 0, until)
    if retired and len(ledger.keys) == len(retired) + 1:
        report.ok(
            f"{len(retired)} retired server key(s), each handed over to the next by a rotation "
            "statement both keys signed; the ledger shown extends every handover"
        )


def check_checkpoint(bundle: Bundle, report: Report, ledger: Ledger, pin: str | None) -> bool:
    server = bundle.json("ledger/server-key.json", {})
    try:
        ledger.server_key = b64decode(server.get("public_key"))
    except ValueError:
        report.fail("ledger/server-key.json: the server's public key is not readable")
        return False
    key_id = sha256_hex(ledger.server_key)
    report.expect(
        key_id == server.get("key_id"),
        "ledger/server-key.json: key_id is not the sha256 of the key",
    )
    if pin and pin != key_id:
        report.fail(f"the server key in the bundle ({key_id}) is not the one you pinned ({pin})")
    held = bundle.json("ledger/checkpoint.json", {})
    body = _signed_body(held, ledger.server_key)
    if body is None:
        report.fail(
            "ledger/checkpoint.json: the signed checkpoint does not verify with the server's key "
            "(forged or changed)"
        )
        return False
    ledger.size, ledger.root = int(body["tree_size"]), bytes.fromhex(body["root_hash"])
    report.ok(
        f"checkpoint signed by the server (key {key_id[:16]}…): {ledger.size} events, root "
        f"{body['root_hash']}, at {body.get('timestamp')}"
    )
    ledger.origin = body.get("origin")
    return True


def check_events(bundle: Bundle, report: Report, ledger: Ledger) -> None:
    events = bundle.json("ledger/events.json", [])
    proofs = bundle.json("ledger/proofs.json", {}).get("proofs", {})
    rows: dict[int, dict] = {}
    for row in events:
        seq = row.get("seq")
        body = str(row.get("body", "")).encode("utf-8")
        if sha256_hex(body) != row.get("entry_hash"):
            report.fail(f"ledger event #{seq}: its bytes do not hash to its entry_hash (changed)")
            continue
        try:
            parsed = json.loads(body)
        except ValueError:
            report.fail(f"ledger event #{seq}: its bytes are not JSON")
            continue
        if canonical_json(parsed) != body or (parsed.get("seq"), parsed.get("prev_hash")) != (
            seq,
            row.get("prev_hash"),
        ):
            report.fail(f"ledger event #{seq}: its bytes are not the canonical event they claim")
            continue
        problem = _proof_problem(seq, body, proofs.get(str(seq)), ledger)
        if problem:
            report.fail(problem)
            continue
        rows[seq] = row
        ledger.events[seq] = parsed
    for seq in sorted(rows):
        follower = rows.get(seq + 1)
        if follower and follower["prev_hash"] != rows[seq]["entry_hash"]:
            report.fail(f"ledger event #{seq + 1} does not follow #{seq} in the hash chain")
    report.ok(
        f"{len(ledger.events)} of {len(events)} events hash correctly, chain where consecutive, "
        f"and are included in the signed tree of {ledger.size}"
    )


def _proof_problem(seq: int, body: bytes, proof: Any, ledger: Ledger) -> str | None:
    if not isinstance(proof, dict):
        return f"ledger event #{seq}: it has no inclusion proof"
    if proof.get("tree_size") != ledger.size or proof.get("leaf_index") != seq - 1:
        return (
            f"ledger event #{seq}: its inclusion proof is for another tree (size "
            f"{proof.get('tree_size')}), not the signed checkpoint's {ledger.size}"
        )
    try:
        path = [bytes.fromhex(node) for node in proof.get("audit_path", [])]
    except (TypeError, ValueError):
        return f"ledger event #{seq}: its inclusion proof is not readable"
    if not verify_inclusion(seq - 1, ledger.size, leaf_hash(body), path, ledger.root):
        return (
            f"ledger event #{seq}: its inclusion proof does not lead to the signed root "
            "(a proof for another tree, or a changed event)"
        )
    return None


def check_earlier_checkpoints(
    bundle: Bundle, report: Report, ledger: Ledger, files: list[Path]
) -> None:
    carried = bundle.json("ledger/earlier-checkpoints.json", [])
    held_bodies = set()
    for item in carried:
        held = item.get("checkpoint", {})
        body, why = _held_body(held, ledger)
        if body is None:
            report.fail(f"an earlier checkpoint in the bundle does not verify: {why}")
            continue
        held_bodies.add(held.get("body"))
        _consistent(report, ledger, body, item.get("consistency", {}), "earlier checkpoint")
    if carried:
        report.ok(f"{len(carried)} earlier signed checkpoint(s): the ledger shown extends each")
    for path in files:
        for held in _read_checkpoints(path):
            body, why = _held_body(held, ledger)
            if body is None:
                report.fail(f"checkpoint in {path}: {why}")
            elif int(body["tree_size"]) == ledger.size:
                report.expect(
                    bytes.fromhex(body["root_hash"]) == ledger.root,
                    f"checkpoint in {path}: the server signed another root for {ledger.size} "
                    "events",
                    f"checkpoint in {path} agrees with the bundle's",
                )
            elif held.get("body") in held_bodies:
                report.ok(f"checkpoint in {path} is one the bundle proves consistency with")
            else:
                report.note(
                    f"checkpoint in {path} (size {body['tree_size']}) cannot be compared offline: "
                    f"ask the server for /api/v1/ledger/consistency/?first=...&second=..."
                )


def _consistent(report: Report, ledger: Ledger, body: dict, proof: dict, what: str) -> None:
    size = int(body["tree_size"])
    try:
        path = [bytes.fromhex(node) for node in proof.get("proof", [])]
    except (TypeError, ValueError):
        path = None
    ok = (
        path is not None
        and (proof.get("first"), proof.get("second")) == (size, ledger.size)
        and verify_consistency(
            size, ledger.size, bytes.fromhex(body["root_hash"]), ledger.root, path
        )
    )
    report.expect(
        ok,
        f"{what} of {size} events: the dossier's ledger does not extend it (rewritten history)",
    )


def _read_checkpoints(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8").strip()
    if text.startswith("{") and "\n" not in text:
        return [json.loads(text)]
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- 3. the records against the ledger ----------------------------------------------------


@dataclass
class Records:
    release: dict
    model_version: dict
    policy: dict
    runs: list[dict]
    decisions: list[dict]
    people: list[dict]
    gate: dict
    keys: dict[str, dict]
    # Decisions whose signature and record check out; None until check_decisions ran. The gate
    # counts no other (one that does not verify is treated as missing: fail closed).
    verified: set[str] | None = None

    @property
    def release_id(self) -> str:
        return str(self.release.get("id"))

    def counting(self) -> list[dict]:
        latest: dict[str, dict] = {}
        for run in sorted(self.runs, key=lambda r: r["attempt"]):
            latest[run["key"]] = run
        return list(latest.values())

    def person(self, username: str) -> dict | None:
        return next((p for p in self.people if p["username"] == username), None)


def load_records(bundle: Bundle) -> Records:
    keys = {}
    for name in bundle.files:
        if name.startswith("keys/") and name.endswith(".json"):
            key = bundle.json(name, {})
            keys[str(key.get("key_id"))] = key
    return Records(
        release=bundle.json("records/release.json", {}),
        model_version=bundle.json("records/model_version.json", {}),
        policy=bundle.json("records/policy.json", {}),
        runs=bundle.json("records/check_runs.json", []),
        decisions=bundle.json("records/decisions.json", []),
        people=bundle.json("records/people.json", []),
        gate=bundle.json("records/gate.json", {}),
        keys=keys,
    )


def check_release(records: Records, ledger: Ledger, report: Report) -> None:
    release, rid = records.release, records.release_id
    opened = ledger.first("release.opened", rid)
    if opened is None:
        report.fail(f"release {rid}: its release.opened event is not in the bundle")
        return
    data = opened["data"]
    said = (
        data.get("model_version"),
        data.get("policy"),
        data.get("policy_digest"),
        data.get("purpose", "release"),
    )
    held = (
        release.get("model_version"),
        release.get("policy"),
        release.get("policy_digest"),
        release.get("purpose"),
    )
    report.expect(said == held, f"release {rid}: it differs from its release.opened event")
    withdrawn = bool(ledger.of("release.withdrawn", rid))
    report.expect(
        withdrawn == bool(release.get("withdrawn_at")),
        f"release {rid}: its withdrawal differs from the ledger's",
    )
    report.expect(
        records.model_version.get("id") == release.get("model_version")
        and records.policy.get("id") == release.get("policy"),
        f"release {rid}: the bundled model version or policy is not the release's",
        f"release {rid} ({release.get('purpose')}) as opened, event #{opened['seq']}",
    )


def check_model_version(records: Records, ledger: Ledger, report: Report) -> None:
    version = records.model_version
    event = ledger.first("model_version.digested", str(version.get("id")))
    if event is None:
        report.fail(
            f"model version {version.get('id')}: the ledger event recording its digests is "
            "not in the bundle"
        )
        return
    data = event["data"]
    recorded = {
        name: data[name]
        for name in ("weights_digest", "tokenizer_digest", "config_digest")
        if name in data
    }
    if isinstance(data.get("files"), dict):
        recorded["file_digests"] = data["files"]
    report.expect(
        all(version.get(name) == value for name, value in recorded.items()),
        f"model version {version.get('family')}@{version.get('version')}: its digests differ "
        "from the ledger's",
        f"model version {version.get('family')}@{version.get('version')}: weights sha256 "
        f"{version.get('weights_digest')} as recorded in event #{event['seq']}",
    )


def check_policy(records: Records, ledger: Ledger, report: Report) -> None:
    policy = records.policy
    digest = json_digest(policy.get("content", {}))
    event = ledger.first("policy.published", str(policy.get("id")))
    if event is None:
        report.fail(f"policy {policy.get('id')}: its policy.published event is not in the bundle")
        return
    content = policy.get("content", {})
    name = f"policy {content.get('name')} v{content.get('version')}"
    report.expect(
        digest
        == policy.get("digest")
        == records.release.get("policy_digest")
        == event["data"].get("digest"),
        f"{name}: its content does not have the digest the release and the ledger recorded",
        f"{name}: digest {digest} recomputed from its content, published in event #{event['seq']}",
    )
    run_ids = {r["id"] for r in records.runs}
    started = [
        e["seq"]
        for e in ledger.events.values()
        if e["verb"] == "check_run.started" and e["target_id"] in run_ids
    ]
    report.expect(
        all(seq > event["seq"] for seq in started),
        f"{name}: a check run started before the policy's thresholds were published",
        f"{name}: thresholds published (event #{event['seq']}) before every run started",
    )


def check_runs(bundle: Bundle, records: Records, ledger: Ledger, report: Report) -> None:
    checks = {c["key"]: c for c in records.policy.get("content", {}).get("required_checks", [])}
    counting = {r["id"] for r in records.counting()}
    for run in records.runs:
        label = f"check run {run['id']} ({run['key']} #{run['attempt']})"
        spec = checks.get(run["key"], {})
        if (spec.get("kind"), spec.get("blocking")) != (run["kind"], run["blocking"]):
            report.fail(f"{label}: its kind or blocking flag differs from the policy's")
        problem = _run_problem(run, ledger, label)
        if problem is None and run["id"] in counting and run["status"] == "succeeded":
            problem = _evidence_problem(bundle, run, label)
        if problem:
            report.fail(problem)
    held = {r["id"] for r in records.runs}
    for event in ledger.events.values():
        if (
            event["verb"] == "check_run.queued"
            and event["data"].get("release") == records.release_id
        ):
            report.expect(
                event["target_id"] in held,
                f"check run {event['target_id']} is missing from the records: its "
                "check_run.queued event remains",
            )
    report.ok(
        f"{len(records.runs)} check run(s) checked against the ledger, {len(counting)} counting"
    )


def _run_problem(run: dict, ledger: Ledger, label: str) -> str | None:
    queued = ledger.first("check_run.queued", run["id"])
    if queued is None:
        return f"{label}: its check_run.queued event is not in the bundle"
    if (queued["data"].get("attempt"), queued["data"].get("release")) != (
        run["attempt"],
        run.get("release"),
    ):
        return f"{label}: its attempt or release differs from its check_run.queued event"
    finished = [verb for status, verb in TERMINAL.items() if ledger.of(verb, run["id"])]
    expected = [TERMINAL[run["status"]]] if run["status"] in TERMINAL else []
    if finished != expected:
        return (
            f"{label}: its status {run['status']!r} differs from the ledger, which records "
            f"{', '.join(finished) or 'no finish'}"
        )
    if run["status"] == "succeeded":
        data = (ledger.first("check_run.succeeded", run["id"]) or {}).get("data", {})
        if (data.get("verdict"), data.get("manifest_digest")) != (
            run["verdict"],
            run["manifest_digest"],
        ):
            return (
                f"{label}: its verdict ({run['verdict']}) or manifest digest differs from its "
                f"ledger event, which records {data.get('verdict')}"
            )
    return None


def _evidence_problem(bundle: Bundle, run: dict, label: str) -> str | None:
    files = {item["title"]: item for item in run.get("evidence", [])}
    manifest_item = files.pop("manifest.json", None)
    raw = bundle.files.get(manifest_item["path"]) if manifest_item else None
    if raw is None or sha256_hex(raw) != run["manifest_digest"]:
        return f"{label}: its evidence manifest is not the one the ledger recorded"
    try:
        manifest = json.loads(raw)
        listed = sorted((a["title"], a["sha256"], a["size"]) for a in manifest["artifacts"])
    except (ValueError, KeyError, TypeError):
        return f"{label}: its evidence manifest is not readable"
    if (
        canonical_json(manifest.get("metrics")) != canonical_json(run["metrics"])
        or manifest.get("verdict") != run["verdict"]
    ):
        return f"{label}: its metrics or verdict differ from its evidence manifest"
    if manifest.get("check_run") != run["id"]:
        return f"{label}: its evidence manifest is another run's"
    bundled = sorted((t, i["sha256"], i["size"]) for t, i in files.items())
    if bundled != listed:
        return f"{label}: its evidence files differ from the artifacts its manifest lists"
    for _title, item in sorted(files.items()):
        data = bundle.files.get(item["path"])
        if data is None or (sha256_hex(data), len(data)) != (item["sha256"], item["size"]):
            return (
                f"{label}: evidence file {item['path']} does not match the sha256 its run "
                "manifest lists (the manifest's digest is in the ledger)"
            )
    return None


def check_keys(records: Records, ledger: Ledger, report: Report) -> None:
    for key_id, key in sorted(records.keys.items()):
        try:
            raw = b64decode(key.get("public_key"))
        except ValueError:
            report.fail(f"key {key_id}: its public key is not readable")
            continue
        event = ledger.first("reviewer_key.registered", key_id)
        if sha256_hex(raw) != key_id:
            report.fail(f"key {key_id}: its id is not the sha256 of its public key")
        elif event is None or event["actor"] != key.get("owner"):
            report.fail(f"key {key_id}: its owner differs from its registration event")
        elif event["data"].get("public_key", key.get("public_key")) != key.get("public_key"):
            report.fail(f"key {key_id}: its public key differs from the one registered")
        elif bool(ledger.of("reviewer_key.revoked", key_id)) != bool(key.get("revoked_at")):
            report.fail(f"key {key_id}: its revocation differs from the ledger's")
        else:
            report.ok(
                f"key {key_id[:16]}… of {key.get('owner')}: registered in event #{event['seq']}"
            )


def check_people(records: Records, ledger: Ledger, report: Report) -> None:
    replayed: dict[str, dict] = {}
    for _, event in sorted(ledger.events.items()):
        if event["target_type"] != "user" or event["verb"] not in ACCOUNT_VERBS:
            continue
        user = replayed.setdefault(event["target_id"], {"roles": set(), "flags": {}})
        data = event["data"]
        if event["verb"] == "user.created":
            user["flags"] = {
                "is_active": data.get("is_active"),
                "is_superuser": data.get("is_superuser"),
            }
        elif event["verb"] == "user.flag_changed":
            user["flags"][data.get("flag")] = data.get("to")
        elif event["verb"] == "user.role_granted":
            user["roles"].add(data.get("role"))
        elif event["verb"] == "user.role_removed":
            user["roles"].discard(data.get("role"))
    for person in records.people:
        want = replayed.get(person["id"])
        held = (
            set(person["roles"]),
            {"is_active": person["is_active"], "is_superuser": person["is_superuser"]},
        )
        report.expect(
            want is not None and held == (want["roles"], want["flags"]),
            f"person {person['username']}: roles or account flags differ from the ledger's",
            f"person {person['username']}: roles {', '.join(person['roles']) or 'none'} as "
            "the ledger's account events say",
        )


def check_decisions(bundle: Bundle, records: Records, ledger: Ledger, report: Report) -> None:
    records.verified = set()
    for decision in records.decisions:
        label = f"decision {decision['id']} ({decision['decision']} by {decision['reviewer']})"
        problem = _decision_problem(bundle, records, ledger, decision, label)
        if report.expect(
            problem is None,
            problem or "",
            f"{label}: signature verifies; the record is what was signed",
        ):
            records.verified.add(decision["id"])
    held = {d["id"] for d in records.decisions}
    for event in ledger.events.values():
        if (
            event["verb"] == "decision.recorded"
            and event["data"].get("release") == records.release_id
        ):
            report.expect(
                event["target_id"] in held,
                f"decision {event['target_id']} is missing from the records: its "
                f"decision.recorded event (#{event['seq']}) remains",
            )


def _decision_problem(
    bundle, records: Records, ledger: Ledger, decision: dict, label: str
) -> str | None:
    envelope = bundle.json(decision.get("envelope", ""), None)
    if not isinstance(envelope, dict) or set(envelope) != {"payloadType", "payload", "signatures"}:
        return f"{label}: its DSSE envelope is missing or malformed"
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        return f"{label}: its envelope carries no signature"
    if len(signatures) != 1 or not isinstance(signatures[0], dict):
        return f"{label}: its envelope must carry exactly one signature"
    key = records.keys.get(str(signatures[0].get("keyid")))
    if key is None or key.get("key_id") != decision["key_id"]:
        return (
            f"{label}: it is signed with a key the bundle does not carry, or another than the "
            "decision's"
        )
    try:
        payload = b64decode(envelope["payload"])
        valid = envelope["payloadType"] == PAYLOAD_TYPE and ed25519_verifies(
            b64decode(key["public_key"]),
            b64decode(signatures[0].get("sig")),
            pae(PAYLOAD_TYPE, payload),
        )
        statement = json.loads(payload)
    except (ValueError, KeyError):
        return f"{label}: its envelope is not readable"
    if not valid:
        return f"{label}: its signature does not verify with the bundled key of {key.get('owner')}"
    return _signed_problem(records, ledger, decision, statement, payload, key, label)


def _signed_problem(records, ledger, decision, statement, payload, key, label) -> str | None:
    if (
        canonical_json(statement) != payload
        or statement.get("_type") != STATEMENT_TYPE
        or statement.get("predicateType") != PREDICATE_TYPE
    ):
        return f"{label}: the signed payload is not a canonical Assay decision statement"
    event = ledger.first("decision.recorded", decision["id"])
    if event is None or event["data"].get("payload_sha256") != sha256_hex(payload):
        return f"{label}: it is not the decision the ledger recorded"
    if not decision["reviewer"] == event["actor"] == key.get("owner"):
        return f"{label}: its reviewer is not the ledger event's actor and the key's owner"
    predicate = statement.get("predicate", {})
    changed = _changed_fields(decision, statement, predicate)
    if changed:
        return (
            f"{label}: the record differs from the statement its reviewer signed "
            f"({', '.join(changed)})"
        )
    return _statement_against_records(records, statement, predicate, label)


def _changed_fields(decision: dict, statement: dict, predicate: dict) -> list[str]:
    signer = predicate.get("signer", {})
    pairs = {
        "decision": (decision["decision"], predicate.get("decision", {}).get("type")),
        "check": (decision["check"] or None, predicate.get("decision", {}).get("check")),
        "meaning": (decision.get("meaning"), predicate.get("decision", {}).get("meaning")),
        "rationale": (decision["rationale"], predicate.get("rationale")),
        "conditions": (decision["conditions"], predicate.get("conditions")),
        "evidence_digest": (decision["evidence_digest"], predicate.get("evidence_digest")),
        "release": (decision.get("release", predicate.get("release")), predicate.get("release")),
        "signed_at": (_time(decision["signed_at"]), _time(predicate.get("signed_at"))),
        "key_id": (decision["key_id"], signer.get("key_id")),
        "printed_name": (decision["printed_name"], signer.get("name")),
        "reviewer": (decision["reviewer"], signer.get("username")),
        "payload_sha256": (decision["payload_sha256"], sha256_hex(canonical_json(statement))),
        "statement": (canonical_json(decision.get("statement")), canonical_json(statement)),
    }
    return [name for name, (held, signed) in pairs.items() if held != signed]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def _statement_against_records(
    records: Records, statement: dict, predicate: dict, label: str
) -> str | None:
    current = current_evidence(records)
    parts = {name: predicate.get(name) for name in ("release", "model_version", "policy", "checks")}
    if predicate.get("evidence_digest") != json_digest(parts):
        return f"{label}: its evidence_digest is not the digest of the evidence it names"
    subject = [
        {
            "name": f"{records.model_version.get('family')}@{records.model_version.get('version')}",
            "digest": {"sha256": records.model_version.get("weights_digest")},
        }
    ]
    for name in ("release", "model_version", "policy"):
        if parts[name] != current[name]:
            return f"{label}: the {name.replace('_', ' ')} it signed is not the bundled one"
    if statement.get("subject") != subject:
        return f"{label}: its subject is not the bundled model's weights digest"
    runs = {r["id"]: r for r in records.runs}
    for entry in parts["checks"] or []:
        run = runs.get(entry.get("run_id"))
        same = run is not None and all(
            entry.get(f) == run.get(g)
            for f, g in (
                ("key", "key"),
                ("kind", "kind"),
                ("attempt", "attempt"),
                ("blocking", "blocking"),
            )
        )
        if same and run is not None and entry.get("status") in FINISHED:
            same = (entry.get("status"), entry.get("verdict"), entry.get("manifest_digest")) == (
                run["status"],
                run["verdict"],
                run["manifest_digest"],
            )
        if not same:
            return (
                f"{label}: it signed check run {entry.get('run_id')} ({entry.get('key')} "
                f"#{entry.get('attempt')}, {entry.get('status')} {entry.get('verdict') or '-'}), "
                "which the bundled records do not hold as such"
            )
    return None


# --- 4. the gate, recomputed --------------------------------------------------------------


def current_evidence(records: Records) -> dict:
    version, policy = records.model_version, records.policy
    content = policy.get("content", {})
    return {
        "release": records.release_id,
        "model_version": {
            name: version.get(name)
            for name in (
                "id",
                "family",
                "version",
                "weights_digest",
                "tokenizer_digest",
                "config_digest",
            )
        },
        "policy": {
            "id": policy.get("id"),
            "name": content.get("name"),
            "version": content.get("version"),
            "digest": records.release.get("policy_digest"),
        },
        "checks": sorted(
            (
                {
                    "key": r["key"],
                    "kind": r["kind"],
                    "blocking": r["blocking"],
                    "run_id": r["id"],
                    "attempt": r["attempt"],
                    "status": r["status"],
                    "verdict": r["verdict"],
                    "manifest_digest": r["manifest_digest"],
                }
                for r in records.counting()
            ),
            key=lambda entry: entry["key"],
        ),
    }


def _roles(person: dict | None) -> set[str]:
    if not person or not person.get("is_active"):
        return set()
    return set(person.get("roles", [])) | ({"admin"} if person.get("is_superuser") else set())


def _usable(records: Records) -> list[dict]:
    if records.verified is None:
        return records.decisions
    return [d for d in records.decisions if d["id"] in records.verified]


def _standing(records: Records, ledger: Ledger) -> list[dict]:
    seqs = {
        e["target_id"]: seq for seq, e in ledger.events.items() if e["verb"] == "decision.recorded"
    }
    ordered = sorted(_usable(records), key=lambda d: seqs.get(d["id"], math.inf))
    latest: dict[str, dict] = {}
    waivers = []
    for decision in ordered:
        if decision["decision"] == "waive":
            waivers.append(decision)
        else:
            latest[decision["reviewer"]] = decision
    return list(latest.values()) + waivers


def _facts(records: Records, decision: dict, current: str) -> dict:
    content = records.policy.get("content", {})
    submitter = records.release.get("submitter")
    eligible = not (
        decision["reviewer"] == submitter and not content.get("submitter_may_approve")
    ) and (content.get("approver_role", "reviewer") in _roles(records.person(decision["reviewer"])))
    key = records.keys.get(decision["key_id"], {})
    facts = {
        "eligible": eligible,
        "covers": decision["evidence_digest"] == current,
        "key_valid": not key.get("revoked_at"),
    }
    facts["counts"] = facts["eligible"] and facts["covers"] and facts["key_valid"]
    return facts


def _trust_warnings(records: Records, ledger: Ledger, approvers: set[str]) -> list[int]:
    opened = ledger.first("release.opened", records.release_id)
    ids = {p["id"]: p["username"] for p in records.people if p["username"] in approvers}
    if opened is None or not ids:
        return []
    return [
        seq
        for seq, e in sorted(ledger.events.items())
        if seq > opened["seq"]
        and e["verb"] in ACCOUNT_VERBS
        and e["target_type"] == "user"
        and e["target_id"] in ids
        and (e["actor"] != ids[e["target_id"]] or e["verb"] == "user.role_granted")
    ]


def recompute_gate(records: Records, ledger: Ledger) -> dict:
    """audits/gate.py's rules over the bundled records: state, reason codes, blockers."""
    current = json_digest(current_evidence(records))
    standing = [(d, _facts(records, d, current)) for d in _standing(records, ledger)]
    waived = {d["check"] for d, f in standing if d["decision"] == "waive" and f["counts"]}
    approvals = [(d, f) for d, f in standing if d["decision"] == "approve"]
    counted = {d["reviewer"] for d, f in approvals if f["counts"]}
    held = {d["id"] for d in _usable(records)}
    missing = sorted(
        e["target_id"]
        for e in ledger.events.values()
        if e["verb"] == "decision.recorded"
        and e["data"].get("release") == records.release_id
        and e["target_id"] not in held
    )
    blockers = [] if records.release.get("purpose") == "release" else ["evaluation"]
    state, reasons = _gate_state(records, standing, waived, counted, missing)
    return {
        "state": state,
        "reasons": reasons,
        "blockers": blockers,
        "may_ship": state == "approved" and not blockers,
        "trust_warnings": _trust_warnings(records, ledger, counted),
        "approvals": sorted(counted),
        "need": records.policy.get("content", {}).get("approvals_required"),
    }


def _gate_state(records, standing, waived, counted, missing) -> tuple[str, list[tuple[str, str]]]:
    if records.release.get("withdrawn_at"):
        return "withdrawn", [("withdrawn", "")]
    if missing:
        return "in_review", [("ledger_mismatch", "")]
    if any(d["decision"] == "reject" and f["eligible"] for d, f in standing):
        return "rejected", [("rejected", "")]
    pending, failing = [], []
    for run in records.counting():
        if run["status"] in ("queued", "running"):
            pending.append(("check_pending", run["key"]))
        elif run["blocking"] and run["key"] not in waived and run["verdict"] != "pass":
            failing.append(("blocking_check_not_passed", run["key"]))
    if pending:
        return "checking", pending + failing
    need = records.policy.get("content", {}).get("approvals_required", 1)
    approvals = [] if len(counted) >= need else [("approvals_missing", "")]
    if failing or approvals:
        return "in_review", failing + approvals
    return "approved", []


def check_gate(records: Records, ledger: Ledger, report: Report) -> dict:
    answer = recompute_gate(records, ledger)
    server = records.gate
    said = (
        server.get("state"),
        sorted((r.get("code"), r.get("check", "")) for r in server.get("reasons", [])),
        sorted(b.get("code") for b in server.get("blockers", [])),
        sorted(w.get("event") for w in server.get("trust_warnings", [])),
    )
    ours = (
        answer["state"],
        sorted(answer["reasons"]),
        sorted(answer["blockers"]),
        answer["trust_warnings"],
    )
    report.expect(
        said == ours,
        f"the gate recomputed from the bundled records answers {answer['state']} "
        f"({', '.join(c for c, _ in answer['reasons']) or 'no reasons'}), but the server's "
        "answer in "
        f"the bundle says {server.get('state')}",
        f"gate recomputed from the records: {answer['state']}, may_ship "
        f"{str(answer['may_ship']).lower()} "
        f"({len(answer['approvals'])} of {answer['need']} approvals count; "
        f"{', '.join(f'{c} {k}'.strip() for c, k in answer['reasons']) or 'no open reasons'}); "
        "the server answered the same",
    )
    return answer


# --- main ---------------------------------------------------------------------------------


def verify(
    bundle_path: Path,
    pdf: Path | None = None,
    checkpoints: list[Path] | None = None,
    server_key_id: str | None = None,
) -> Report:
    report = Report()
    bundle = Bundle(bundle_path)
    manifest = check_files(bundle, report)
    report.lines.insert(
        0,
        f"Assay dossier {manifest.get('dossier_id', '?')} for release "
        f"{manifest.get('release', '?')} "
        f"(made {manifest.get('generated_at', '?')})",
    )
    if pdf is None and (bundle_path.parent / "dossier.pdf").is_file():
        pdf = bundle_path.parent / "dossier.pdf"
    check_pdf(bundle, pdf, report)
    report.section("The ledger")
    ledger = Ledger()
    if check_checkpoint(bundle, report, ledger, server_key_id):
        check_events(bundle, report, ledger)
        check_key_chain(bundle.json("ledger/server-key.json", {}), report, ledger)
        check_earlier_checkpoints(bundle, report, ledger, checkpoints or [])
    records = load_records(bundle)
    report.section("The records against the ledger")
    check_release(records, ledger, report)
    check_model_version(records, ledger, report)
    check_policy(records, ledger, report)
    check_runs(bundle, records, ledger, report)
    check_keys(records, ledger, report)
    check_people(records, ledger, report)
    report.section("Decisions")
    check_decisions(bundle, records, ledger, report)
    report.section("The gate")
    check_gate(records, ledger, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify an Assay dossier bundle offline.")
    parser.add_argument("bundle", type=Path, help="bundle.zip")
    parser.add_argument(
        "--pdf", type=Path, help="the dossier PDF (default: dossier.pdf beside the bundle)"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a signed checkpoint you hold (JSON or JSON lines); repeatable",
    )
    parser.add_argument("--server-key-id", help="the server key id you expect (sha256 hex)")
    args = parser.parse_args(argv)
    try:
        report = verify(args.bundle, args.pdf, args.checkpoint, args.server_key_id)
    except BundleError as exc:
        print(f"cannot read the bundle: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines))
    if report.failures:
        print(f"\nNOT VERIFIED: {len(report.failures)} problem(s):")
        for failure in report.failures:
            print(f"  - {failure}")
        return 1
    print("\nVERIFIED: every file, signature, proof and record checks out.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
