#!/usr/bin/env python3
"""assay_gate: a release pipeline's question to Assay, "may this release ship?", for CI jobs.

One file, Python 3.11 standard library only. It asks the release's gate
(GET /api/v1/releases/<id>/gate/), pinning the policy and weights digests the pipeline expects,
and waits until the release is decided or --timeout passes, polling every --interval seconds.

  python3 assay_gate.py --release ID [--policy-digest HEX] [--weights-digest HEX]
                        [--timeout SECONDS] [--interval SECONDS] [--fail-on-trust-warnings]
                        [--json FILE] [--junit FILE] [--server URL] [--cacert FILE]

The token comes from ASSAY_TOKEN or the file named by ASSAY_TOKEN_FILE (an account with the
`pipeline` role reads gate answers and nothing else: `manage.py issue_token USER`); the server
from --server or ASSAY_SERVER.

Exit status: 0 only when the gate answers "may_ship": true (and, with --fail-on-trust-warnings,
lists no trust warnings); 1 when the release may not ship (rejected, withdrawn, a pin that does
not match, an evaluation, trust warnings refused); 2 when it was still undecided at the
timeout; 3 when the question could not be asked (bad arguments, no token, the server refused
or could not be reached before the timeout).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

SHIP, BLOCKED, UNDECIDED, ERROR = 0, 1, 2, 3
# States after which the answer cannot change by waiting (a new decision or a re-run could
# still move an in_review release, so the client keeps asking until the timeout).
FINAL_STATES = ("approved", "rejected", "withdrawn")
# Blockers that stay whatever anyone signs.
FINAL_BLOCKERS = ("policy_digest_mismatch", "weights_digest_mismatch", "evaluation")
HEX64 = re.compile(r"[0-9a-f]{64}")
TRANSIENT_HTTP = (408, 425, 429, 500, 502, 503, 504)


class GateError(Exception):
    """The gate could not be asked; the message says why and what to do."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="assay_gate",
        description="Ask Assay whether a release may ship; exit 0 only on may_ship: true.",
    )
    p.add_argument("--release", required=True, help="the release's id")
    p.add_argument("--server", default=os.environ.get("ASSAY_SERVER"), help="Assay's base URL")
    p.add_argument("--policy-digest", help="the policy digest this pipeline expects (64 hex)")
    p.add_argument("--weights-digest", help="the weights digest this pipeline ships (64 hex)")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds to wait for a decision (default 0: ask once)",
    )
    p.add_argument("--interval", type=float, default=15.0, help="seconds between questions")
    p.add_argument(
        "--fail-on-trust-warnings",
        action="store_true",
        help="refuse to ship when the gate lists trust warnings (changes to an approver's "
        "account made by someone else after the release opened)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the outcome as JSON")
    p.add_argument("--junit", type=Path, metavar="FILE", help="write the outcome as JUnit XML")
    p.add_argument("--cacert", type=Path, help="CA bundle for a server with a private CA")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    args = p.parse_args(argv)
    for name in ("policy_digest", "weights_digest"):
        value = getattr(args, name)
        if value is not None and not HEX64.fullmatch(value):
            p.error(f"--{name.replace('_', '-')} must be 64 lowercase hex characters")
    if not args.server:
        p.error("give --server or set ASSAY_SERVER (e.g. https://assay.example.com)")
    if args.interval <= 0 or args.timeout < 0:
        p.error("--interval must be positive and --timeout not negative")
    return args


def read_token() -> str:
    token = os.environ.get("ASSAY_TOKEN", "").strip()
    path = os.environ.get("ASSAY_TOKEN_FILE", "").strip()
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GateError(f"cannot read ASSAY_TOKEN_FILE={path}: {exc}") from None
    if not token:
        raise GateError(
            "no token: set ASSAY_TOKEN (or ASSAY_TOKEN_FILE) to a token of an account with the "
            "pipeline role (an admin makes one with `manage.py issue_token USER`)"
        )
    return token


def gate_url(args: argparse.Namespace) -> str:
    release = urllib.parse.quote(args.release, safe="")
    query = {
        key: value
        for key, value in (
            ("policy_digest", args.policy_digest),
            ("weights_digest", args.weights_digest),
        )
        if value
    }
    suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
    return f"{args.server.rstrip('/')}/api/v1/releases/{release}/gate/{suffix}"


def ask(url: str, token: str, context: ssl.SSLContext | None) -> dict[str, Any]:
    """One question. A transient failure raises TimeoutError (the caller retries); anything
    else that stops an answer raises GateError."""
    request = urllib.request.Request(  # noqa: S310 - the operator gives the server's URL
        url, headers={"Authorization": f"Token {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code in TRANSIENT_HTTP:
            raise TimeoutError(f"HTTP {exc.code} from the server") from None
        raise GateError(_refusal(exc)) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TimeoutError(f"cannot reach the server: {getattr(exc, 'reason', exc)}") from None
    except ValueError as exc:
        raise GateError(f"the server's answer is not JSON: {exc}") from None


def _refusal(exc: urllib.error.HTTPError) -> str:
    try:
        detail = json.loads(exc.read().decode("utf-8"))
    except (ValueError, OSError):
        detail = {}
    what = detail.get("detail") if isinstance(detail, dict) else None
    hints = {
        401: "the token is missing, wrong or expired: make a new one",
        403: "the token's account may not read this gate (it needs the pipeline role or any "
        "Assay role)",
        404: "no release with this id on this server (check --release and --server)",
        400: "the server refused the question (see detail)",
    }
    return f"HTTP {exc.code}: {what or exc.reason}; {hints.get(exc.code, 'see the detail')}"


def decided(answer: dict[str, Any]) -> bool:
    if answer.get("may_ship") is True or answer.get("state") in FINAL_STATES:
        return True
    return any(b.get("code") in FINAL_BLOCKERS for b in answer.get("blockers") or [])


def wait_for_answer(args, token: str, context) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Ask until decided or the timeout; returns (last answer or None, facts of the wait)."""
    url, started, polls = gate_url(args), time.monotonic(), 0
    answer, last_error = None, ""
    while True:
        polls += 1
        try:
            answer = ask(url, token, context)
            last_error = ""
            if decided(answer):
                break
        except TimeoutError as exc:
            last_error = str(exc)
        remaining = args.timeout - (time.monotonic() - started)
        if remaining <= 0:
            break
        if not args.quiet:
            state = answer.get("state") if answer else "no answer"
            print(f"assay_gate: {state}; asking again in {args.interval:g} s", file=sys.stderr)
        time.sleep(min(args.interval, remaining))
    waited = round(time.monotonic() - started, 1)
    return answer, {"polls": polls, "waited_seconds": waited, "last_error": last_error}


def verdict(args, answer: dict[str, Any] | None, wait: dict[str, Any]) -> tuple[int, str]:
    if answer is None:
        return ERROR, f"no answer from the gate before the timeout: {wait['last_error']}"
    warnings = answer.get("trust_warnings") or []
    if answer.get("may_ship") is True:
        if args.fail_on_trust_warnings and warnings:
            return BLOCKED, f"approved, but refused: {len(warnings)} trust warning(s)"
        return SHIP, "may ship"
    if decided(answer):
        return BLOCKED, f"may not ship: {answer.get('state')}"
    return UNDECIDED, f"still {answer.get('state')} after {wait['waited_seconds']:g} s"


def outcome(args, answer, wait, code: int, summary: str) -> dict[str, Any]:
    answer = answer or {}
    return {
        "release": args.release,
        "server": args.server,
        "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exit_code": code,
        "outcome": {SHIP: "ship", BLOCKED: "blocked", UNDECIDED: "undecided"}.get(code, "error"),
        "summary": summary,
        "may_ship": answer.get("may_ship") is True and code == SHIP,
        "state": answer.get("state"),
        "reasons": answer.get("reasons", []),
        "blockers": answer.get("blockers", []),
        "trust_warnings": answer.get("trust_warnings", []),
        "pinned": {"policy_digest": args.policy_digest, "weights_digest": args.weights_digest},
        "policy": answer.get("policy"),
        "model_version": answer.get("model_version"),
        **wait,
    }


def _messages(items: list[dict]) -> str:
    return "\n".join(f"{i.get('code', '?')}: {i.get('message', '')}" for i in items)


def junit(result: dict[str, Any]) -> bytes:
    """One suite, one case per question the pipeline asked: may it ship, do the pins hold,
    (with --fail-on-trust-warnings) are there none."""
    suite = ET.Element("testsuite", name="assay-gate", timestamp=result["checked_at"])
    props = ET.SubElement(suite, "properties")
    for key in ("release", "server", "state", "outcome"):
        ET.SubElement(props, "property", name=key, value=str(result[key]))
    cases: list[tuple[str, str | None, str]] = []
    failed = "" if result["exit_code"] == SHIP else result["summary"]
    body = _messages(result["reasons"] + result["blockers"])
    cases.append((f"release {result['release']} may ship", failed or None, body))
    for pin in ("policy_digest", "weights_digest"):
        if result["pinned"][pin]:
            mismatch = [b for b in result["blockers"] if b.get("code") == f"{pin}_mismatch"]
            cases.append((f"{pin} pinned", _messages(mismatch) or None, ""))
    if result["trust_warnings"]:
        cases.append(("no trust warnings", "trust warnings", _messages(result["trust_warnings"])))
    for name, failure, text in cases:
        case = ET.SubElement(suite, "testcase", classname="assay.gate", name=name)
        case.set("time", str(result["waited_seconds"]))
        if failure:
            kind = "error" if result["exit_code"] == ERROR else "failure"
            ET.SubElement(case, kind, message=failure).text = text or failure
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for _, f, _ in cases if f and result["exit_code"] != ERROR)))
    suite.set("errors", str(sum(1 for _, f, _ in cases if f and result["exit_code"] == ERROR)))
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True)


def write_reports(args, result: dict[str, Any]) -> None:
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.junit:
        args.junit.write_bytes(junit(result))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    context = ssl.create_default_context(cafile=str(args.cacert)) if args.cacert else None
    try:
        token = read_token()
        answer, wait = wait_for_answer(args, token, context)
        code, summary = verdict(args, answer, wait)
    except GateError as exc:
        answer, wait = None, {"polls": 0, "waited_seconds": 0.0, "last_error": str(exc)}
        code, summary = ERROR, str(exc)
    result = outcome(args, answer, wait, code, summary)
    write_reports(args, result)
    if code == ERROR:
        print(f"assay_gate: {summary}", file=sys.stderr)
    elif not args.quiet:
        print(f"assay_gate: release {args.release}: {summary}")
        for item in result["reasons"] + result["blockers"] + result["trust_warnings"]:
            print(f"  {item.get('code', '?')}: {item.get('message', '')}")
    return code


if __name__ == "__main__":
    sys.exit(main())
