"""The reviewer's side of signing: fetch the statement, show it, sign locally, submit.

Only the standard library and `cryptography`: the private key is read from a local file and
never leaves this process; the server only ever sees the public key and the signature.
"""

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from audits import signing, statements


class ClientError(Exception):
    pass


@dataclass(frozen=True)
class Server:
    url: str
    token: str

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
            raise ClientError(f"--server must be an http(s) URL, not {self.url!r}")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            urllib.parse.urljoin(self.url.rstrip("/") + "/", path.lstrip("/")),
            data=data,
            method=method,
            headers={
                "Authorization": f"Token {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - http(s) only
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ClientError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:2000]}"
            ) from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc.reason}") from None


def ensure_key_registered(server: Server, key, label: str) -> str:
    raw = signing.raw_public_key(key.public_key())
    key_id = signing.key_id(raw)
    try:
        server.request("GET", f"/api/v1/reviewer-keys/{key_id}/")
    except ClientError:
        register_key(server, key, label)
    return key_id


def register_key(server: Server, key, label: str) -> dict:
    """Register with proof of possession: the key signs the server's challenge."""
    raw = signing.raw_public_key(key.public_key())
    issued = server.request("GET", "/api/v1/reviewer-keys/challenge/")
    me = server.request("GET", "/api/v1/me/")
    message = signing.key_proof_message(
        username=me["username"], key_id=signing.key_id(raw), challenge=issued["challenge"]
    )
    return server.request(
        "POST",
        "/api/v1/reviewer-keys/",
        {
            "public_key": signing.b64(raw),
            "label": label,
            "challenge": issued["challenge"],
            "proof": signing.b64(key.sign(message)),
        },
    )


def fetch_statement(server: Server, release: str, decision: str, check: str | None) -> dict:
    query = {"decision": decision, **({"check": check} if check else {})}
    answer = server.request(
        "GET", f"/api/v1/releases/{release}/statement/?{urllib.parse.urlencode(query)}"
    )
    return answer["statement"]


def complete(
    statement: dict, *, key_id: str, rationale: str, conditions: list[str], name: str | None
) -> dict:
    predicate = statement["predicate"]
    predicate["rationale"] = rationale
    predicate["conditions"] = conditions
    predicate["signer"]["key_id"] = key_id
    if name:
        predicate["signer"]["name"] = name
    predicate["signed_at"] = datetime.now(UTC).isoformat()
    return statement


def sign_and_submit(server: Server, release: str, statement: dict, key) -> dict:
    envelope = signing.sign_envelope(statement, key)
    return server.request("POST", f"/api/v1/releases/{release}/decisions/", {"envelope": envelope})


def load_key(path: str):
    return signing.load_private_key(Path(path))


summary_lines = statements.summary_lines
