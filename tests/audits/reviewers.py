"""How a reviewer signs through the API in tests: register a key, fetch the statement, sign it
with the CLI's signing code, submit the envelope."""

import base64
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from audits import signing


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_registration(personas, who: str, key: Ed25519PrivateKey, as_user: str | None = None):
    """The body of a key registration with its proof of possession (made for as_user, who
    defaults to the person registering)."""
    client = personas.client(who)
    challenge = client.get("/api/v1/reviewer-keys/challenge/").json()["challenge"]
    raw = raw_public_key(key)
    message = signing.key_proof_message(
        username=as_user or getattr(personas, who).get_username(),
        key_id=signing.key_id(raw),
        challenge=challenge,
    )
    return {
        "public_key": base64.b64encode(raw).decode(),
        "challenge": challenge,
        "proof": signing.b64(key.sign(message)),
    }


def register_key(personas, who: str) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    response = personas.client(who).post(
        "/api/v1/reviewer-keys/", key_registration(personas, who, key), format="json"
    )
    assert response.status_code == 201, response.content
    return key


def fetch_statement(
    personas, who, release, decision="approve", check=None, rationale="looks right"
):
    query = f"decision={decision}" + (f"&check={check}" if check else "")
    answer = personas.client(who).get(f"/api/v1/releases/{release.pk}/statement/?{query}")
    assert answer.status_code == 200, answer.content
    statement = answer.json()["statement"]
    predicate = statement["predicate"]
    predicate["rationale"] = rationale
    predicate["conditions"] = ["monitor refusals"]
    predicate["signer"]["name"] = f"{who.title()} Person"
    predicate["signed_at"] = datetime.now(UTC).isoformat()
    return statement


def submit(personas, who, release, envelope):
    return personas.client(who).post(
        f"/api/v1/releases/{release.pk}/decisions/", {"envelope": envelope}, format="json"
    )


def decide(personas, who, key, release, decision="approve", check=None):
    statement = fetch_statement(personas, who, release, decision, check)
    return submit(personas, who, release, signing.sign_envelope(statement, key))
