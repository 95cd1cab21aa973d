"""The end-to-end demo: personas, the demo model, the frontier-release policy, one release.

Every step is idempotent, so running the demo twice reuses what the first run made: the same
personas and passwords, the same model version, the same published policy (a new version only
when the demo's policy changed), and the same release (opened with a fixed Idempotency-Key).
"""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from rest_framework.authtoken.models import Token

from audits import actions, gate, statements
from audits.models import CheckPolicy, Decision, ModelVersion, Release
from audits.roles import Role, ensure_role_groups, grant

DEMO_PERSONAS = {
    "demo-submitter": Role.SUBMITTER,
    "demo-reviewer-1": Role.REVIEWER,
    "demo-reviewer-2": Role.REVIEWER,
    "demo-admin": Role.ADMIN,
    "demo-auditor": Role.AUDITOR,
}
REVIEWERS = ("demo-reviewer-1", "demo-reviewer-2")
POLICY_NAME = "frontier-release"
POLICY_DESCRIPTION = (
    "Release policy for the demo model: the weights must be the registered weights, and two "
    "reviewers other than the submitter must approve."
)
# The checks this policy requires; later capabilities add the interpretability checks here.
POLICY_CHECKS = [
    {"key": "weights-fingerprint", "kind": "weights_fingerprint", "blocking": True},
]


@dataclass(frozen=True)
class DemoModel:
    family: str
    version: str
    path: Path
    format: str


def demo_dir() -> Path:
    folder = Path(settings.VAR_DIR) / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def ensure_personas() -> dict[str, str]:
    """Demo users and their local-only passwords (made once, kept in var/demo, mode 600)."""
    ensure_role_groups()
    store = demo_dir() / "credentials.json"
    passwords = json.loads(store.read_text()) if store.exists() else {}
    for username, role in DEMO_PERSONAS.items():
        passwords.setdefault(username, secrets.token_urlsafe(12))
        user, _ = User.objects.get_or_create(username=username)
        # Admins and auditors may browse the read-only Django admin.
        user.is_staff = role in (Role.ADMIN, Role.AUDITOR)
        if not user.check_password(passwords[username]):
            user.set_password(passwords[username])
        user.save()
        grant(user, role)
    store.write_text(json.dumps(passwords, indent=2))
    store.chmod(0o600)
    return passwords


def ensure_model_version(model: DemoModel, submitter: User) -> ModelVersion:
    existing = ModelVersion.objects.filter(family=model.family, version=model.version).first()
    if existing:
        return existing
    return actions.register_model_version(
        actor=submitter, family=model.family, version=model.version,
        source_path=str(model.path), fmt=model.format,
        description="Demo model registered by `make demo`.",
    )


def ensure_policy(admin: User) -> CheckPolicy:
    """The newest published frontier-release whose checks are the demo's; else publish one."""
    wanted = [actions_check(check) for check in POLICY_CHECKS]
    for policy in CheckPolicy.objects.filter(name=POLICY_NAME, status="published"):
        if [check.content() for check in policy.required_checks.all()] == wanted:
            return policy
    with transaction.atomic():
        draft = actions.create_policy(actor=admin, name=POLICY_NAME, checks=POLICY_CHECKS,
                                      description=POLICY_DESCRIPTION, approvals_required=2)
        return actions.publish_policy(actor=admin, policy=draft)


def actions_check(check: dict) -> dict:
    """A policy check as RequiredCheck.content() reports it, defaults filled in."""
    return {"key": check["key"], "kind": check["kind"], "parameters": check.get("parameters", {}),
            "thresholds": check.get("thresholds", {}), "blocking": check.get("blocking", True)}


def wait_for(condition: Callable[[], bool], timeout: float, what: str,
             report: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        line = report() if report else ""
        if line and line != last:
            print(line, flush=True)
            last = line
        time.sleep(1)


def open_demo_release(model_version: ModelVersion, policy: CheckPolicy, submitter: User):
    release, created = actions.open_release(
        actor=submitter, model_version=model_version, policy=policy,
        title=f"{model_version} under {policy}",
        idempotency_key=f"demo-{model_version.pk}-{policy.pk}",
        request_digest=f"demo-{model_version.pk}-{policy.pk}",
    )
    return release, created


def progress_line(release: Release) -> str:
    return "  " + ", ".join(
        f"{run.required_check.key}: {run.status} {run.progress:.0%} {run.stage}".rstrip()
        for run in actions.counting_runs(release)
    )


def summary(release: Release) -> dict:
    answer = gate.evaluate(actions.gate_facts(release))
    return {
        "release": str(release.pk),
        "model_version": str(release.model_version),
        "weights_digest": release.model_version.weights_digest,
        "policy": f"{release.policy.name} v{release.policy.version}",
        "policy_digest": release.policy_digest,
        "check_runs": [
            {"check": run.required_check.key, "kind": run.kind, "status": run.status,
             "verdict": run.verdict, "attempt": run.attempt, "summary": run.summary,
             "error": run.error, "manifest_digest": run.manifest_digest}
            for run in actions.counting_runs(release)
        ],
        "decisions": [
            {"reviewer": d.reviewer.get_username(), "decision": d.decision,
             "check": d.check_key, "key_id": d.key_id, "signed_at": d.signed_at.isoformat(),
             "covers_current_evidence": d.evidence_digest == statements.evidence_digest(release)}
            for d in release.decisions.select_related("reviewer")
        ],
        "gate": {"state": answer.state, "may_ship": answer.may_ship, "reasons": answer.reasons},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/schema/", timeout=5):
            return True
    except OSError:
        return False


def has_current_approval(release: Release, username: str) -> bool:
    release = Release.objects.get(pk=release.pk)
    return Decision.objects.filter(
        release=release, reviewer__username=username, decision=Decision.Type.APPROVE,
        evidence_digest=statements.evidence_digest(release)).exists()


def reviewer_key(username: str) -> Path:
    """The reviewer's private key, made once with `manage.py keygen` (it never leaves var/)."""
    path = demo_dir() / "keys" / f"{username}.pem"
    if not path.exists():
        subprocess.run([sys.executable, "manage.py", "keygen", str(path)], cwd=settings.BASE_DIR,
                       env=os.environ.copy(), check=True, capture_output=True)
    return path


def sign_with_cli(release: Release, username: str, server_url: str):
    token = Token.objects.get_or_create(user=User.objects.get(username=username))[0].key
    command = [
        sys.executable, "manage.py", "sign_decision", "--server", server_url, "--token", token,
        "--release", str(release.pk), "--decision", "approve", "--key",
        str(reviewer_key(username)), "--register-key", "--yes",
        "--name", f"{username.replace('-', ' ').title()} (demo)",
        "--rationale", "Reviewed the evidence of every required check in the demo release.",
    ]
    return subprocess.run(command, cwd=settings.BASE_DIR, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)


def waiver_hint(release: Release, reasons: list[dict]) -> list[str]:
    """How a reviewer would waive a failing blocking check. The demo never waives: accepting a
    failed safety check is a human decision with a written rationale."""
    failing = [r["check"] for r in reasons if r["code"] == "blocking_check_not_passed"]
    if not failing:
        return []
    return ["A reviewer who accepts a failing blocking check signs a waiver, for example:",
            *(f"  manage.py sign_decision --release {release.pk} --decision waive --check "
              f"{check} --rationale '<why shipping is acceptable>' --key <your key>"
              for check in failing)]
