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
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils.text import slugify

from audits import actions, gate, queries
from audits.models import CatalogFeature, CheckPolicy, Decision, Lens, ModelVersion, Release
from audits.roles import Role, ensure_role_groups, grant
from demo import policies as demo_policies

DEMO_PERSONAS = {
    "demo-submitter": Role.SUBMITTER,
    "demo-reviewer-1": Role.REVIEWER,
    "demo-reviewer-2": Role.REVIEWER,
    "demo-admin": Role.ADMIN,
    "demo-auditor": Role.AUDITOR,
}
REVIEWERS = ("demo-reviewer-1", "demo-reviewer-2")
SMOLLM2_FAMILY = "SmolLM2-135M-Instruct"
CONFIRMED_PER_AXIS = 2
POLICY_DESCRIPTIONS = {
    demo_policies.LENS_REVIEW: (
        "Is the lens good enough to count as evidence, and which of its features separate each "
        "risk axis from neutral prompts? One approval."
    ),
    demo_policies.FRONTIER_RELEASE: (
        "Release policy for the demo model: every interpretability check kind, the weights "
        "must be the registered weights, and two reviewers other than the submitter must "
        "approve."
    ),
    demo_policies.FRONTIER_BASELINE: (
        "The behaviour, audit and intervention checks of frontier-release with the same "
        "parameters, run as an evaluation of the version the release candidate was tuned from, "
        "so the two versions can be compared side by side. Never ships."
    ),
}


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


def ensure_model_version(
    model: DemoModel, submitter: User, parent: ModelVersion | None = None
) -> ModelVersion:
    existing = ModelVersion.objects.filter(family=model.family, version=model.version).first()
    if existing:
        return existing
    return actions.register_model_version(
        actor=submitter,
        family=model.family,
        version=model.version,
        source_path=str(model.path),
        fmt=model.format,
        parent=parent,
        description="Demo model registered by `make demo`.",
    )


def lens_name(path: Path) -> str:
    """A lens is named after what it reads: its hook point (blocks.14.hook_resid_post becomes
    blocks-14-hook-resid-post), taken from its cfg.json before any worker has validated it."""
    cfg = json.loads((path / "cfg.json").read_text(encoding="utf-8"))
    hook = (cfg.get("metadata") or {}).get("hook_name") or cfg.get("hook_name") or "lens"
    return slugify(hook.replace(".", "-").replace("_", "-"))[:100]


def ensure_lens(model_version: ModelVersion, path: Path, submitter: User) -> Lens:
    name = lens_name(path)
    existing = model_version.lenses.filter(name=name).first()
    if existing:
        return existing
    return actions.register_lens(
        actor=submitter, model_version=model_version, name=name, source_path=str(path)
    )


def ensure_policy(admin: User, name: str, checks: list[dict]) -> CheckPolicy:
    """The newest published policy of this name whose checks are these; else publish one."""
    wanted = sorted(actions.validated_checks(checks), key=lambda check: check["key"])
    for policy in CheckPolicy.objects.filter(name=name, status="published"):
        if [check.content() for check in policy.required_checks.all()] == wanted:
            return policy
    with transaction.atomic():
        draft = actions.create_policy(
            actor=admin,
            name=name,
            checks=checks,
            description=POLICY_DESCRIPTIONS[name],
            approvals_required=2 if name == demo_policies.FRONTIER_RELEASE else 1,
        )
        return actions.publish_policy(actor=admin, policy=draft)


def confirm_top_proposals(lens: Lens, reviewer: User) -> list[CatalogFeature]:
    """The demo reviewer confirms the best-separating proposals of each axis, named by where
    they fire. A real reviewer reads the contexts first; the demo says it did not."""
    confirmed = []
    for axis in {f.risk_axis for f in lens.features.all()}:
        proposals = sorted(
            lens.features.filter(risk_axis=axis), key=lambda f: -f.evidence.get("auroc", 0)
        )[:CONFIRMED_PER_AXIS]
        for feature in proposals:
            if feature.status == CatalogFeature.Status.PROPOSED:
                confirmed.append(
                    actions.review_feature(
                        actor=reviewer,
                        feature=feature,
                        label=_label(feature),
                        risk_axis=axis,
                        status=CatalogFeature.Status.CONFIRMED,
                    )
                )
    return confirmed


def _label(feature: CatalogFeature) -> str:
    """The name quotes the held-out AUROC (confirmation split, with its interval): the
    discovery split's figure is the best of 4096 features on the prompts they were ranked on,
    so it overstates how well the feature separates new prompts."""
    contexts = feature.evidence.get("contexts") or [{}]
    peak = (contexts[0].get("token") or "").strip() or "?"
    words = _auroc_words(feature)
    label = f"{feature.risk_axis} #{feature.index}: peaks on '{peak}' ({words}; demo confirmation)"
    return label[:200]


def _auroc_words(feature: CatalogFeature) -> str:
    held = (feature.evidence.get("confirmation") or {}).get("auroc") or {}
    if held.get("value") is None:
        return f"AUROC {feature.evidence.get('auroc', 0):.2f} in sample, not confirmed held out"
    return (
        f"held-out AUROC {held['value']:.2f} [{held['lower95']:.2f}, {held['upper95']:.2f}], "
        f"n = {held.get('n')}"
    )


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    report: Callable[[], str] | None = None,
) -> None:
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


def assign_to_family(admin: User, family: str, policy: CheckPolicy) -> None:
    """The admin makes policy the one every release of the family must satisfy."""
    assignment, _ = queries.assigned_policy(family)
    if assignment is None or assignment.family != family or assignment.policy_name != policy.name:
        actions.assign_policy(actor=admin, family=family, policy_name=policy.name)


def open_demo_release(
    model_version: ModelVersion, policy: CheckPolicy, submitter: User, purpose: str
):
    """A release under the family's assigned policy, or an evaluation under any policy."""
    release, created = actions.open_release(
        actor=submitter,
        model_version=model_version,
        policy=policy,
        purpose=purpose,
        title=f"{model_version} under {policy}",
        idempotency_key=f"demo-{model_version.pk}-{policy.pk}",
        request_digest=f"demo-{model_version.pk}-{policy.pk}",
    )
    return release, created


def progress_line(release: Release) -> str:
    return "  " + ", ".join(
        f"{run.required_check.key}: {run.status} {run.progress:.0%} {run.stage}".rstrip()
        for run in queries.counting_runs(release)
    )


def summary(release: Release) -> dict:
    answer = gate.evaluate(queries.gate_facts(release))
    return {
        "release": str(release.pk),
        "model_version": str(release.model_version),
        "weights_digest": release.model_version.weights_digest,
        "policy": f"{release.policy.name} v{release.policy.version}",
        "policy_digest": release.policy_digest,
        "check_runs": [
            {
                "check": run.required_check.key,
                "kind": run.kind,
                "status": run.status,
                "verdict": run.verdict,
                "blocking": run.required_check.blocking,
                "attempt": run.attempt,
                "summary": run.summary,
                "error": run.error,
                "manifest_digest": run.manifest_digest,
            }
            for run in queries.counting_runs(release)
        ],
        "decisions": [
            {
                "reviewer": d.reviewer.get_username(),
                "decision": d.decision,
                "check": d.check_key,
                "key_id": d.key_id,
                "signed_at": d.signed_at.isoformat(),
                "covers_current_evidence": d.evidence_digest == queries.evidence_digest(release),
            }
            for d in release.decisions.select_related("reviewer")
        ],
        "gate": {"state": answer.state, "may_ship": answer.may_ship, "reasons": answer.reasons},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_answers(port: int) -> bool:
    """Whether the demo's web server answers at all (the API asks who you are: 401 is an
    answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/me/", timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def local_env() -> dict:
    """The environment of the demo's own processes: plain http on 127.0.0.1, so the
    https-only settings are off whatever the caller's environment says."""
    return {**os.environ, "ASSAY_HTTPS": "false"}


def has_current_approval(release: Release, username: str) -> bool:
    release = Release.objects.get(pk=release.pk)
    return Decision.objects.filter(
        release=release,
        reviewer__username=username,
        decision=Decision.Type.APPROVE,
        evidence_digest=queries.evidence_digest(release),
    ).exists()


REVIEW_CLIENT = Path(settings.BASE_DIR) / "tools" / "assay_review.py"


def review_client(*args: str, token: str = "", server_url: str = ""):
    """Run tools/assay_review.py, the reviewer's own client, as a reviewer would."""
    command = [sys.executable, str(REVIEW_CLIENT)]
    if server_url:
        command += ["--server", server_url, "--token", token]
    return subprocess.run(
        [*command, *args], env=local_env(), capture_output=True, text=True, timeout=300
    )


def reviewer_key(username: str) -> Path:
    """The reviewer's private key, made once by the client (it never leaves var/demo/keys)."""
    path = demo_dir() / "keys" / f"{username}.pem"
    if not path.exists():
        made = review_client("keygen", str(path))
        if made.returncode:
            raise RuntimeError(f"keygen failed: {made.stderr}")
    return path


def api_token(server_url: str, username: str) -> str:
    """Sign in as the demo person, as they would (their own password, their own token): a
    token made for them by anyone else would show in the gate's trust warnings."""
    password = json.loads((demo_dir() / "credentials.json").read_text())[username]
    request = urllib.request.Request(  # noqa: S310 - the demo's own http server
        f"{server_url}/api/v1/auth/token/",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - local http
        return json.loads(response.read())["token"]


def sign_with_cli(release: Release, username: str, server_url: str):
    """The reviewer registers their key (proof of possession) and signs an approval with
    tools/assay_review.py over HTTP; the demo answers yes for them."""
    token, key = api_token(server_url, username), str(reviewer_key(username))
    registered = review_client(
        "register", "--key", key, "--yes", token=token, server_url=server_url
    )
    if registered.returncode:
        return registered
    return review_client(
        "sign",
        "--release",
        str(release.pk),
        "--decision",
        "approve",
        "--key",
        key,
        "--yes",
        "--name",
        f"{username.replace('-', ' ').title()} (demo)",
        "--rationale",
        "Reviewed the evidence of every required check in the demo release; "
        "blocking checks that did not pass stay blocking unless waived.",
        token=token,
        server_url=server_url,
    )


def waiver_hint(release: Release, reasons: list[dict]) -> list[str]:
    """How a reviewer would waive a failing blocking check. The demo never waives: accepting a
    failed safety check is a human decision with a written rationale."""
    failing = [r["check"] for r in reasons if r["code"] == "blocking_check_not_passed"]
    if not failing:
        return []
    return [
        "A reviewer who accepts a failing blocking check signs a waiver, for example:",
        *(
            f"  python tools/assay_review.py --user <you> sign --release {release.pk} "
            f"--decision waive --check {check} --rationale '<why shipping is acceptable>' "
            "--key <your key>"
            for check in failing
        ),
    ]


def shipped_lens() -> Path:
    """The lens shipped with Assay for SmolLM2 (interp_jobs/lenses/smollm2-*)."""
    found = sorted(Path(settings.ASSAY_SHIPPED_LENSES).glob("smollm2-*/cfg.json"))
    if not found:
        raise FileNotFoundError(f"no SmolLM2 lens under {settings.ASSAY_SHIPPED_LENSES}")
    return found[0].parent


def shipped_transcoders() -> Path | None:
    """The per-layer transcoder set shipped for SmolLM2 (circuit_trace), if there is one."""
    found = sorted(
        Path(settings.ASSAY_SHIPPED_LENSES).glob("smollm2-*transcoders*/transcoders.json")
    )
    return found[0].parent if found else None


def ensure_transcoders(model_version: ModelVersion, root: Path, submitter: User) -> list[Lens]:
    """One lens per layer of a transcoder set (``tc-NN``), as circuit_trace reads them."""
    from interp_jobs.engine.loading.transcoders import read_set

    info = read_set(root)
    lenses = []
    for layer in range(info.n_layers):
        name = f"tc-{layer:02d}"
        existing = model_version.lenses.filter(name=name).first()
        lenses.append(
            existing
            or actions.register_lens(
                actor=submitter,
                model_version=model_version,
                name=name,
                source_path=str(info.layer_dir(layer)),
            )
        )
    return lenses


def intervention_axis(lens: Lens) -> str:
    """The risk axis whose confirmed catalog features the demo's intervention edits: weapons
    when the catalog has confirmed weapons features, else the first axis that has some."""
    axes = sorted(set(lens.features.filter(status="confirmed").values_list("risk_axis", flat=True)))
    return "weapons" if "weapons" in axes or not axes else axes[0]
