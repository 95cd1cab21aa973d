"""The end-to-end demo: personas, the demo model, the frontier-release policy, one release.

Every step is idempotent, so running the demo twice reuses what the first run made: the same
personas and passwords, the same model version, the same published policy (a new version only
when the demo's policy changed), and the same release (opened with a fixed Idempotency-Key).
"""

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from audits import actions, gate
from audits.models import CheckPolicy, ModelVersion, Release
from audits.roles import Role, ensure_role_groups, grant

DEMO_PERSONAS = {
    "demo-submitter": Role.SUBMITTER,
    "demo-reviewer-1": Role.REVIEWER,
    "demo-reviewer-2": Role.REVIEWER,
    "demo-admin": Role.ADMIN,
    "demo-auditor": Role.AUDITOR,
}
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
        "gate": {"state": answer.state, "may_ship": answer.may_ship, "reasons": answer.reasons},
    }
