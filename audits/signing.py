"""Ed25519 keys, DSSE envelopes around in-toto Statement v1, and the server's checkpoint key.

What a reviewer signs is the DSSE pre-authentication encoding (PAE) of the statement's bytes:

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

with LEN the decimal byte length, type "application/vnd.in-toto+json", and body the RFC 8785
canonical JSON of the statement (audits.canonical). A signature therefore covers exactly the
bytes the reviewer's tool showed, and any change to the statement breaks it.
"""

import base64
import binascii
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = ["Ed25519PublicKey", "InvalidSignature"]  # re-exported for verifiers

from audits import safe_json
from audits.canonical import CanonicalJSONError, canonical_json

PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEY_PROOF_CONTEXT = "assay reviewer key registration v1"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://assay.example/release-decision/v1"


class SignatureError(ValueError):
    """An envelope, key or signature that cannot be accepted; the message says why."""


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


_pae = pae  # verify_signature's keyword argument shadows the name


def b64decode(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise SignatureError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SignatureError(f"{what} is not valid base64") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- keys -----------------------------------------------------------------------------------


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(raw: bytes) -> str:
    """The key id: sha256 (hex) of the raw 32-byte public key."""
    return hashlib.sha256(raw).hexdigest()


def parse_public_key(text: str) -> bytes:
    """Raw Ed25519 public key bytes from a PEM (SubjectPublicKeyInfo) or raw base64 text."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise SignatureError(f"the PEM public key could not be read: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise SignatureError("the PEM key is not an Ed25519 public key")
        return raw_public_key(key)
    raw = b64decode(text, "the public key")
    if len(raw) != 32:
        raise SignatureError(f"a raw Ed25519 public key is 32 bytes; this one is {len(raw)}")
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise SignatureError("these 32 bytes are not an Ed25519 public key") from None
    return raw


def key_proof_message(*, username: str, key_id: str, challenge: str) -> bytes:
    """What a new key signs to prove its holder registers it (proof of possession): the
    context line, the registering person, the key id and the server's challenge."""
    return "\n".join((KEY_PROOF_CONTEXT, username, key_id, challenge)).encode("utf-8")


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise SignatureError(f"cannot read the private key in {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} does not hold an Ed25519 private key")
    return key


# --- envelopes ------------------------------------------------------------------------------


def sign_envelope(statement: dict, key: Ed25519PrivateKey) -> dict:
    payload = canonical_json(statement)
    signature = key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": b64(payload),
        "signatures": [{"keyid": key_id(raw_public_key(key.public_key())), "sig": b64(signature)}],
    }


@dataclass(frozen=True)
class OpenedEnvelope:
    payload: bytes
    statement: dict
    key_id: str
    signature: bytes


def open_envelope(envelope: Any) -> OpenedEnvelope:
    """Check an envelope's shape and decode it; the signature is checked by verify_envelope."""
    if not isinstance(envelope, dict) or set(envelope) != {"payloadType", "payload", "signatures"}:
        raise SignatureError(
            "the envelope must be an object with exactly payloadType, payload and signatures"
        )
    if envelope["payloadType"] != PAYLOAD_TYPE:
        raise SignatureError(f"payloadType must be {PAYLOAD_TYPE!r}")
    signatures = envelope["signatures"]
    if (
        not isinstance(signatures, list)
        or len(signatures) != 1
        or not isinstance(signatures[0], dict)
        or not isinstance(signatures[0].get("keyid"), str)
    ):
        raise SignatureError("the envelope must carry exactly one signature with a keyid")
    payload = b64decode(envelope["payload"], "payload")
    return OpenedEnvelope(
        payload,
        _statement(payload),
        signatures[0]["keyid"],
        b64decode(signatures[0].get("sig"), "signature"),
    )


def _statement(payload: bytes) -> dict:
    try:
        statement = safe_json.loads(payload.decode("utf-8"), what="the signed payload")
    except UnicodeDecodeError:
        raise SignatureError("the payload is not UTF-8 JSON") from None
    except safe_json.UnsafeJSONError as exc:
        raise SignatureError(str(exc)) from None
    try:
        canonical = canonical_json(statement)
    except CanonicalJSONError as exc:
        raise SignatureError(f"the payload has no canonical form: {exc}") from None
    if canonical != payload:
        raise SignatureError(
            "the payload must be RFC 8785 canonical JSON (sorted keys, no "
            "whitespace), so that what is signed is unambiguous"
        )
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        raise SignatureError(f"the payload must be an in-toto Statement ({STATEMENT_TYPE})")
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureError(f"predicateType must be {PREDICATE_TYPE!r}")
    return statement


def verify_signature(
    raw_public: bytes, payload: bytes, signature: bytes, *, pae: bool = True
) -> None:
    """Raise SignatureError unless signature is the key's over payload (over its DSSE PAE for
    envelopes; over the bytes themselves for a proof of possession, pae=False)."""
    signed = _pae(PAYLOAD_TYPE, payload) if pae else payload
    try:
        Ed25519PublicKey.from_public_bytes(raw_public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise SignatureError(
            "the signature does not verify with the registered key: the "
            "statement was changed after signing or signed with another key"
        ) from None
