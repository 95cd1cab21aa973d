#!/usr/bin/env python3
"""assay_ledger: an auditor's check that an Assay server's ledger only ever grows.

One file; needs Python 3.11 and the `cryptography` package. Commands:

  save FILE               save the server's signed checkpoint and public key to FILE
  check FILE              verify FILE's signature (with the key saved in it), fetch the current
                          checkpoint, and prove with an RFC 6962 consistency proof that the
                          ledger still extends FILE's tree (nothing rewritten or cut)
  event SEQ [--against FILE]
                          fetch event SEQ, recompute its hash from its fields and its leaf,
                          and prove its inclusion in FILE's (or the current) signed tree

Sign in with --token (or ASSAY_TOKEN) or --user NAME; the server is --server (or
ASSAY_SERVER). How an event is hashed (also in the README, "The ledger"): its bytes are the
RFC 8785 canonical JSON of {seq, at, actor, verb, target_type, target_id, data, prev_hash},
with `at` in UTC ISO 8601 with microseconds and +00:00; entry_hash = sha256(bytes), the next
event's prev_hash (the first event's prev_hash is 64 zeros); the Merkle leaf is
sha256(0x00 || bytes) and a node sha256(0x01 || left || right).
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


class LedgerError(Exception):
    """The ledger does not verify, or the request failed; the message says which."""


# --- RFC 8785 canonical JSON (the same bytes as the server's audits.canonical) --------------


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise LedgerError("NaN and infinity have no JSON form")
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
    raise LedgerError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    return _encode(value).encode("utf-8")


# --- RFC 6962 / RFC 9162 hashing and proof checks -------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
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


# --- events and checkpoints -----------------------------------------------------------------


def timestamp(value: str) -> str:
    """An event's `at` as it is hashed: UTC, microseconds, +00:00."""
    return (
        datetime.fromisoformat(value.replace("Z", "+00:00"))
        .astimezone(UTC)
        .isoformat(timespec="microseconds")
    )


def event_bytes(event: dict) -> bytes:
    return canonical_json(
        {
            "seq": event["seq"],
            "at": timestamp(event["at"]),
            "actor": event["actor_label"],
            "verb": event["verb"],
            "target_type": event["target_type"],
            "target_id": event["target_id"],
            "data": event["data"],
            "prev_hash": event["prev_hash"],
        }
    )


def check_signed(point: dict, public_key_b64: str) -> dict:
    """The checkpoint's signed body, once its signature verifies with the key."""
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
    try:
        public.verify(base64.b64decode(point["signature"], validate=True), point["body"].encode())
    except InvalidSignature:
        raise LedgerError(
            "the checkpoint's signature does not verify with the server's key"
        ) from None
    return json.loads(point["body"])


# --- the server -----------------------------------------------------------------------------


class Server:
    def __init__(self, url: str, token: str | None) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise LedgerError(f"--server must be an http(s) URL, not {url!r}")
        self.url, self.token = url.rstrip("/"), token

    def get(self, path: str) -> dict:
        return self._request("GET", path)

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            self.url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:2000]
            raise LedgerError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise LedgerError(f"cannot reach {self.url}: {exc.reason}") from None

    def sign_in(self, username: str, password: str) -> None:
        answer = self._request(
            "POST", "/api/v1/auth/token/", {"username": username, "password": password}
        )
        self.token = answer["token"]


# --- commands -------------------------------------------------------------------------------


def save(server: Server, path: Path) -> str:
    point = server.get("/api/v1/ledger/checkpoint/")
    key = server.get("/api/v1/ledger/public-key/")
    body = check_signed(point, key["public_key"])
    held = {
        "body": point["body"],
        "signature": point["signature"],
        "key_id": point["key_id"],
        "public_key": key["public_key"],
        "server": server.url,
    }
    path.write_text(json.dumps(held, indent=2) + "\n")
    return (
        f"saved the checkpoint of {body['tree_size']} events (root {body['root_hash']}) to {path}"
    )


def _held(path: Path) -> tuple[dict, dict]:
    held = json.loads(path.read_text())
    return held, check_signed(held, held["public_key"])


def check(server: Server, path: Path) -> str:
    held, old = _held(path)
    now = check_signed(server.get("/api/v1/ledger/checkpoint/"), held["public_key"])
    if now["tree_size"] < old["tree_size"]:
        raise LedgerError(
            f"the ledger shrank: {path} signs {old['tree_size']} events, the server now "
            f"{now['tree_size']}: events were deleted"
        )
    query = urllib.parse.urlencode({"first": old["tree_size"], "second": now["tree_size"]})
    proof = server.get(f"/api/v1/ledger/consistency/?{query}")
    ok = verify_consistency(
        old["tree_size"],
        now["tree_size"],
        bytes.fromhex(old["root_hash"]),
        bytes.fromhex(now["root_hash"]),
        [bytes.fromhex(p) for p in proof["proof"]],
    )
    if not ok:
        raise LedgerError(
            f"the current ledger does not extend the one {path} signed: events up to "
            f"#{old['tree_size']} were rewritten"
        )
    return (
        f"consistent: the ledger grew from {old['tree_size']} to {now['tree_size']} events "
        "without changing any of the first"
    )


def event(server: Server, seq: int, path: Path | None) -> str:
    found = server.get(f"/api/v1/audit-events/{seq}/")
    entry = event_bytes(found)
    if found.get("body") is not None and found["body"].encode() != entry:
        raise LedgerError(f"event #{seq}: its fields are not the bytes the server hashed")
    if hashlib.sha256(entry).hexdigest() != found["entry_hash"]:
        raise LedgerError(f"event #{seq}: its fields do not hash to its entry_hash")
    if path is not None:
        _, signed = _held(path)
    else:
        key = server.get("/api/v1/ledger/public-key/")["public_key"]
        signed = check_signed(server.get("/api/v1/ledger/checkpoint/"), key)
    size = signed["tree_size"]
    proof = server.get(f"/api/v1/ledger/inclusion/?seq={seq}&tree_size={size}")
    ok = verify_inclusion(
        seq - 1,
        size,
        leaf_hash(entry),
        [bytes.fromhex(p) for p in proof["audit_path"]],
        bytes.fromhex(signed["root_hash"]),
    )
    if not ok:
        raise LedgerError(f"event #{seq} is not in the tree of {size} events the checkpoint signed")
    return (
        f"event #{seq} ({found['verb']} by {found['actor_label']}) hashes to its entry_hash "
        f"and is included in the signed tree of {size} events"
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="assay_ledger.py", description=__doc__.split("\n")[0])
    top.add_argument("--server", default=os.environ.get("ASSAY_SERVER", "http://127.0.0.1:8000"))
    top.add_argument("--token", default=os.environ.get("ASSAY_TOKEN"))
    top.add_argument("--user", help="sign in as this person (asks for the password)")
    commands = top.add_subparsers(dest="command", required=True)
    commands.add_parser("save", help="save the signed checkpoint").add_argument("file", type=Path)
    commands.add_parser("check", help="prove the ledger extends a saved checkpoint").add_argument(
        "file", type=Path
    )
    one = commands.add_parser("event", help="verify one event and its inclusion")
    one.add_argument("seq", type=int)
    one.add_argument("--against", type=Path, help="a saved checkpoint (default: the current)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        server = Server(args.server, args.token)
        if args.user:
            server.sign_in(args.user, getpass.getpass(f"password for {args.user}: "))
        if args.command == "save":
            print(save(server, args.file))
        elif args.command == "check":
            print(check(server, args.file))
        else:
            print(event(server, args.seq, args.against))
    except (LedgerError, OSError, ValueError, KeyError) as exc:
        print(f"assay_ledger: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
