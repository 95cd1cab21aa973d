"""tools/assay_gate.py as a CI job runs it: a separate process, its exit status and its reports,
against a live server (the real gate) and against a scripted gate (waiting, retries)."""

import ast
import json
import os
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from knox.models import get_token_model

from audits import current_actor
from audits.roles import Role, grant

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "assay_gate.py"


def run_gate(server: str, token: str | None, *args: str, timeout: float = 120):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env["ASSAY_SERVER"] = server
    if token is not None:
        env["ASSAY_TOKEN"] = token
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_client_uses_the_standard_library_only():
    tree = ast.parse(TOOL.read_text())
    modules = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert modules - {"__future__"} <= set(sys.stdlib_module_names)


# --- against the real gate ------------------------------------------------------------------


@pytest.fixture
def pipeline_token(personas):
    grant(personas.outsider, Role.PIPELINE)
    with current_actor.acting_as(personas.admin):
        return get_token_model().objects.create(user=personas.outsider)[1]


@pytest.mark.django_db(transaction=True)
def test_an_approved_release_ships_with_matching_pins(
    live_server, approved_release, pipeline_token, tmp_path
):
    model_version, policy_digest = approved_release.model_version, approved_release.policy_digest
    result = run_gate(
        live_server.url,
        pipeline_token,
        "--release",
        str(approved_release.pk),
        "--policy-digest",
        policy_digest,
        "--weights-digest",
        model_version.weights_digest,
        "--json",
        str(tmp_path / "gate.json"),
        "--junit",
        str(tmp_path / "gate.xml"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["may_ship"] is True
    assert report["outcome"] == "ship"
    assert report["pinned"]["policy_digest"] == policy_digest
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    assert suite.get("tests") == "3"
    assert suite.get("failures") == "0"
    assert suite.find("testcase/failure") is None


@pytest.mark.django_db(transaction=True)
def test_a_pin_that_does_not_match_blocks_at_once(
    live_server, approved_release, pipeline_token, tmp_path
):
    result = run_gate(
        live_server.url,
        pipeline_token,
        "--release",
        str(approved_release.pk),
        "--weights-digest",
        "0" * 64,
        "--timeout",
        "60",
        "--interval",
        "1",
        "--junit",
        str(tmp_path / "gate.xml"),
        "--json",
        str(tmp_path / "gate.json"),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # final: the first answer ends the wait (no polling for a decision that cannot come)
    assert json.loads((tmp_path / "gate.json").read_text())["polls"] == 1
    assert "weights_digest_mismatch" in result.stdout
    suite = ET.parse(tmp_path / "gate.xml").getroot()
    failed = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None
    ]
    assert failed == [f"release {approved_release.pk} may ship", "weights_digest pinned"]


@pytest.mark.django_db(transaction=True)
def test_an_undecided_release_times_out_with_status_2(
    live_server, checked_release, pipeline_token, tmp_path
):
    result = run_gate(
        live_server.url,
        pipeline_token,
        "--release",
        str(checked_release.pk),
        "--timeout",
        "2",
        "--interval",
        "0.5",
        "--json",
        str(tmp_path / "gate.json"),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    report = json.loads((tmp_path / "gate.json").read_text())
    assert report["outcome"] == "undecided"
    assert report["state"] == "in_review"
    assert report["polls"] >= 3
    assert any(r["code"] == "approvals_missing" for r in report["reasons"])


@pytest.mark.django_db(transaction=True)
def test_a_bad_token_is_an_error_that_says_what_to_do(live_server, checked_release, tmp_path):
    result = run_gate(
        live_server.url,
        "not-a-token",
        "--release",
        str(checked_release.pk),
        "--junit",
        str(tmp_path / "gate.xml"),
    )
    assert result.returncode == 3
    assert "HTTP 401" in result.stderr
    assert "make a new one" in result.stderr
    assert ET.parse(tmp_path / "gate.xml").getroot().find("testcase/error") is not None


def test_no_token_is_an_error(tmp_path):
    result = run_gate("http://127.0.0.1:9", None, "--release", "x")
    assert result.returncode == 3
    assert "ASSAY_TOKEN" in result.stderr


def test_bad_digests_are_refused_before_asking():
    result = run_gate("http://127.0.0.1:9", "t", "--release", "x", "--policy-digest", "abc")
    assert result.returncode == 2  # argparse's usage error
    assert "64 lowercase hex" in result.stderr


# --- against a scripted gate ----------------------------------------------------------------


@pytest.fixture
def scripted_gate():
    """A gate that answers each request with the next scripted (status, body)."""
    script: list[tuple[int, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = script.pop(0) if len(script) > 1 else script[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


def _answer(state, may_ship=False, **extra):
    return {"state": state, "may_ship": may_ship, "reasons": [], "blockers": [], **extra}


def test_the_client_waits_through_transient_errors_until_approved(scripted_gate, tmp_path):
    url, script = scripted_gate
    script += [
        (200, _answer("checking")),
        (503, {"detail": "restarting"}),
        (200, _answer("in_review")),
        (200, _answer("approved", may_ship=True)),
    ]
    result = run_gate(url, "t", "--release", "r1", "--timeout", "30", "--interval", "0.2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "may ship" in result.stdout


def test_a_rejection_ends_the_wait_with_status_1(scripted_gate, tmp_path):
    url, script = scripted_gate
    script += [(200, _answer("in_review")), (200, _answer("rejected"))]
    report = tmp_path / "gate.json"
    result = run_gate(
        url, "t", "--release", "r1", "--timeout", "30", "--interval", "0.2", "--json", str(report)
    )
    assert result.returncode == 1
    assert json.loads(report.read_text())["polls"] == 2  # the rejection ended the wait


def test_trust_warnings_block_only_when_asked(scripted_gate, tmp_path):
    url, script = scripted_gate
    warning = {"code": "approver_password_changed", "message": "changed by admin"}
    script.append((200, _answer("approved", may_ship=True, trust_warnings=[warning])))
    assert run_gate(url, "t", "--release", "r1").returncode == 0
    refused = run_gate(
        url, "t", "--release", "r1", "--fail-on-trust-warnings", "--json", str(tmp_path / "g.json")
    )
    assert refused.returncode == 1
    report = json.loads((tmp_path / "g.json").read_text())
    assert report["may_ship"] is False
    assert report["trust_warnings"] == [warning]


def test_an_unreachable_server_is_retried_then_reported(tmp_path):
    result = run_gate(
        "http://127.0.0.1:9", "t", "--release", "r1", "--timeout", "1", "--interval", "0.3"
    )
    assert result.returncode == 3
    assert "cannot reach the server" in result.stderr
