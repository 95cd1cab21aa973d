#!/usr/bin/env python3
"""assay_review: sign Assay release decisions with a key that never leaves your machine.

One file; needs Python 3.11 and the `cryptography` package, nothing else (no Django, no
torch, no server secret). Commands:

  keygen PATH                      write an Ed25519 private key (PEM, mode 600)
  register --key PATH              register its public key with proof that you hold it
  sign --release ID --decision approve|reject|waive [--check KEY] --rationale TEXT --key PATH
                                   fetch the statement, show it in words, sign, submit
  verify --envelope FILE (--key PATH | --public-key B64)
                                   check a signed envelope (DSSE, Ed25519) offline

Sign in with --token (or ASSAY_TOKEN), or with --user NAME (asks for your password and gets a
token for this run only). The server is --server (or ASSAY_SERVER, default
http://127.0.0.1:8000). What is signed: an in-toto Statement v1 in a DSSE envelope, the
payload being RFC 8785 canonical JSON; see the README's Signatures section.
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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEY_PROOF_CONTEXT = "assay reviewer key registration v1"
FINISHED = ("succeeded", "errored", "cancelled")


class ReviewError(Exception):
    """Something the reviewer must fix; the message says what."""


# --- RFC 8785 canonical JSON and DSSE (the same bytes as the server's audits.canonical) ---


def _number(value: float) -> str:
    if not math.isfinite(value):
        raise ReviewError("NaN and infinity have no JSON form")
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
    raise ReviewError(f"{type(value).__name__} has no canonical JSON form")


def canonical_json(value: Any) -> bytes:
    return _encode(value).encode("utf-8")


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# --- keys -----------------------------------------------------------------------------------


def keygen(path: Path, force: bool) -> str:
    if path.exists() and not force:
        raise ReviewError(f"{path} exists; use --force to overwrite it")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(pem)
    raw = raw_public(key.public_key())
    return f"private key: {path}\npublic key (base64): {b64(raw)}\nkey id: {key_id(raw)}"


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ReviewError(f"cannot read the private key in {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ReviewError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key_from(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode("ascii"))
        if not isinstance(key, Ed25519PublicKey):
            raise ReviewError("the PEM key is not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))


# --- the server -----------------------------------------------------------------------------


class Server:
    def __init__(self, url: str, token: str | None = None) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ReviewError(f"--server must be an http(s) URL, not {url!r}")
        self.url, self.token = url.rstrip("/"), token

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
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
            raise ReviewError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise ReviewError(f"cannot reach {self.url}: {exc.reason}") from None

    def sign_in(self, username: str, password: str) -> None:
        answer = self.request(
            "POST", "/api/v1/auth/token/", {"username": username, "password": password}
        )
        self.token = answer["token"]


def connect(args) -> Server:
    server = Server(args.server, args.token)
    if args.user:
        server.sign_in(args.user, getpass.getpass(f"password for {args.user}: "))
    if not server.token:
        raise ReviewError("sign in with --token (or ASSAY_TOKEN), or with --user NAME")
    return server


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    return input(f"{question} [y/N] ").strip().lower() == "y"


# --- register -------------------------------------------------------------------------------


def register(server: Server, key: Ed25519PrivateKey, label: str, assume_yes: bool) -> str:
    raw = raw_public(key.public_key())
    me = server.request("GET", "/api/v1/me/")
    if key_id(raw) in me["keys"]:
        return f"key {key_id(raw)} is already registered to {me['username']}"
    if not confirm(f"Register key {key_id(raw)} as {me['username']}'s signing key?", assume_yes):
        raise ReviewError("nothing registered")
    challenge = server.request("GET", "/api/v1/reviewer-keys/challenge/")["challenge"]
    message = "\n".join((KEY_PROOF_CONTEXT, me["username"], key_id(raw), challenge)).encode()
    server.request(
        "POST",
        "/api/v1/reviewer-keys/",
        {
            "public_key": b64(raw),
            "label": label,
            "challenge": challenge,
            "proof": b64(key.sign(message)),
        },
    )
    return f"registered key {key_id(raw)} for {me['username']}"


# --- sign -----------------------------------------------------------------------------------


def refuse_up_front(statement: dict, release: dict, decision: str, check: str | None) -> None:
    """What the server would refuse, said before anything is signed."""
    checks = statement["predicate"]["checks"]
    running = [c["key"] for c in checks if c["status"] not in FINISHED]
    if decision != "reject" and running:
        raise ReviewError(
            f"checks {', '.join(running)} have not finished; approve or waive once they have "
            "(a rejection may be signed at any time)"
        )
    if release.get("withdrawn_at"):
        raise ReviewError(f"release {release['id']} was withdrawn")
    blocking = sorted(c["key"] for c in checks if c["blocking"])
    if decision == "waive" and check not in blocking:
        raise ReviewError(
            f"a waiver names one of the release's blocking checks ({', '.join(blocking) or 'none'})"
            f"; {check!r} is not one"
        )
    if decision != "waive" and check:
        raise ReviewError("--check is only for waivers")


def summary_lines(statement: dict) -> list[str]:
    predicate = statement["predicate"]
    model, policy = predicate["model_version"], predicate["policy"]
    lines = [
        f"Release:    {predicate['release']}",
        f"Model:      {model['family']}@{model['version']} "
        f"(weights sha256 {model['weights_digest']})",
        f"Policy:     {policy['name']} v{policy['version']} ({policy['digest']})",
        "Checks:",
    ]
    for c in predicate["checks"]:
        kind = "blocking" if c["blocking"] else "advisory"
        lines.append(
            f"  - {c['key']} ({c['kind']}, {kind}), attempt {c['attempt']}: {c['status']} "
            f"{c['verdict'] or '-'}; evidence manifest {c['manifest_digest'] or '-'}"
        )
    decision, signer = predicate["decision"], predicate["signer"]
    lines += [
        f"Decision:   {decision['type']}"
        + (f" of check {decision['check']}" if decision["check"] else ""),
        f"Meaning:    {decision['meaning']}",
        f"Rationale:  {predicate['rationale']}",
        f"Conditions: {'; '.join(predicate['conditions']) or 'none'}",
        f"Signer:     {signer['name']} ({signer['username']}), key {signer['key_id']}",
        f"Signed at:  {predicate['signed_at']}",
        "This is your electronic signature (21 CFR 11.50): your printed name, the date and time,",
        "and the meaning above are bound to exactly this evidence.",
    ]
    return lines


def fill_in(statement: dict, *, kid: str, rationale: str, conditions: list[str], name: str | None):
    predicate = statement["predicate"]
    predicate["rationale"] = rationale
    predicate["conditions"] = conditions
    predicate["signer"]["key_id"] = kid
    if name:
        predicate["signer"]["name"] = name
    predicate["signed_at"] = datetime.now(UTC).isoformat()
    return statement


def envelope(statement: dict, key: Ed25519PrivateKey) -> dict:
    payload = canonical_json(statement)
    kid = key_id(raw_public(key.public_key()))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": b64(payload),
        "signatures": [{"keyid": kid, "sig": b64(key.sign(pae(PAYLOAD_TYPE, payload)))}],
    }


def sign(server: Server, args, out) -> str:
    key = load_key(Path(args.key))
    kid = key_id(raw_public(key.public_key()))
    me = server.request("GET", "/api/v1/me/")
    if kid not in me["keys"]:
        raise ReviewError(
            f"key {kid} is not a registered key of {me['username']}; run `register --key` first"
        )
    release = server.request("GET", f"/api/v1/releases/{args.release}/")
    query = urllib.parse.urlencode(
        {"decision": args.decision, **({"check": args.check} if args.check else {})}
    )
    statement = server.request("GET", f"/api/v1/releases/{args.release}/statement/?{query}")
    statement = statement["statement"]
    refuse_up_front(statement, release, args.decision, args.check)
    fill_in(statement, kid=kid, rationale=args.rationale, conditions=args.condition, name=args.name)
    print(
        "You are about to sign:",
        *("  " + line for line in summary_lines(statement)),
        sep="\n",
        file=out,
    )
    if not confirm("Sign this statement?", args.yes):
        raise ReviewError("not signed")
    decision = server.request(
        "POST",
        f"/api/v1/releases/{args.release}/decisions/",
        {"envelope": envelope(statement, key)},
    )
    return f"recorded decision {decision['id']} ({decision['decision']})"


# --- verify ---------------------------------------------------------------------------------


def verify(envelope_doc: dict, public: Ed25519PublicKey) -> str:
    payload = base64.b64decode(envelope_doc["payload"], validate=True)
    signature = base64.b64decode(envelope_doc["signatures"][0]["sig"], validate=True)
    try:
        public.verify(signature, pae(envelope_doc["payloadType"], payload))
    except InvalidSignature:
        raise ReviewError("the signature does not verify with this key") from None
    statement = json.loads(payload)
    if canonical_json(statement) != payload:
        raise ReviewError("the payload is not RFC 8785 canonical JSON")
    predicate = statement["predicate"]
    return (
        f"valid signature by key {key_id(raw_public(public))}: {predicate['decision']['type']} "
        f"of release {predicate['release']} by {predicate['signer']['name']} at "
        f"{predicate['signed_at']}"
    )


# --- the command line -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="assay_review.py", description=__doc__.split("\n")[0])
    top.add_argument("--server", default=os.environ.get("ASSAY_SERVER", "http://127.0.0.1:8000"))
    top.add_argument("--token", default=os.environ.get("ASSAY_TOKEN"))
    top.add_argument("--user", help="sign in as this person (asks for the password)")
    commands = top.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("keygen", help="write a new Ed25519 private key")
    gen.add_argument("path", type=Path)
    gen.add_argument("--force", action="store_true")
    reg = commands.add_parser("register", help="register your key (proof of possession)")
    reg.add_argument("--key", required=True)
    reg.add_argument("--label", default="assay_review")
    reg.add_argument("--yes", action="store_true", help="do not ask before registering")
    sig = commands.add_parser("sign", help="sign a decision on a release")
    sig.add_argument("--release", required=True)
    sig.add_argument("--decision", required=True, choices=["approve", "reject", "waive"])
    sig.add_argument("--check", help="the blocking check a waiver covers")
    sig.add_argument("--rationale", required=True)
    sig.add_argument("--condition", action="append", default=[])
    sig.add_argument("--name", help="your printed name (default: your account's name)")
    sig.add_argument("--key", required=True)
    sig.add_argument("--yes", action="store_true", help="sign without asking")
    ver = commands.add_parser("verify", help="verify a signed envelope offline")
    ver.add_argument("--envelope", required=True, type=Path)
    group = ver.add_mutually_exclusive_group(required=True)
    group.add_argument("--key", help="your private key file (its public half is used)")
    group.add_argument("--public-key", help="Ed25519 public key: raw base64 or PEM")
    return top


def run(args, out) -> str:
    if args.command == "keygen":
        return keygen(args.path, args.force)
    if args.command == "verify":
        public = (
            load_key(Path(args.key)).public_key() if args.key else public_key_from(args.public_key)
        )
        return verify(json.loads(args.envelope.read_text()), public)
    server = connect(args)
    if args.command == "register":
        return register(server, load_key(Path(args.key)), args.label, args.yes)
    return sign(server, args, out)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        print(run(args, sys.stdout))
    except (ReviewError, OSError, ValueError, KeyError) as exc:
        print(f"assay_review: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
