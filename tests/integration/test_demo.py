"""The demo runs end to end on the embedded default (SQLite + filesystem broker), twice."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _manage(var_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ASSAY_", "DATABASE_URL", "CELERY_"))
    }
    env.update(
        {
            "ASSAY_VAR_DIR": str(var_dir),
            "ASSAY_SECRET_KEY": "demo-test-" + "k" * 40,
            "DJANGO_SETTINGS_MODULE": "config.settings",
        }
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


KINDS = [
    "weights_fingerprint",
    "sae_fidelity",
    "feature_discovery",
    "feature_activation_audit",
    "circuit_trace",
    "feature_intervention",
    "behavior_probe",
    "version_drift",
]


def test_demo_runs_twice_signs_and_writes_a_summary(tmp_path):
    # A tiny model with a planted weapons direction and a lens with one feature reading it, so
    # that discovery has something real to find and the catalog is not empty.
    from tests.factories import save_planted_lens, save_planted_model_for, save_random_transcoders

    model = tmp_path / "var" / "models" / "tiny"
    direction = save_planted_model_for(model, version="v2")  # the demo's probe set
    lens = save_planted_lens(tmp_path / "var" / "models" / "tiny-lens", direction)
    transcoders = save_random_transcoders(tmp_path / "var" / "models" / "tiny-transcoders")
    assert _manage(tmp_path / "var", "migrate", "--noinput").returncode == 0

    runs = [
        _manage(
            tmp_path / "var",
            "demo",
            "--no-serve",
            "--model",
            f"hf_dir:{model}",
            "--lens",
            str(lens),
            "--transcoders",
            str(transcoders),
        )
        for _ in range(2)
    ]

    for result in runs:
        assert result.returncode == 0, result.stderr + result.stdout
    assert "Opened release" in runs[0].stdout
    assert "Reusing release" in runs[1].stdout
    summary = json.loads((tmp_path / "var" / "demo" / "summary.json").read_text())
    runs_by_kind = {run["kind"]: run for run in summary["check_runs"]}
    assert sorted(runs_by_kind) == sorted(KINDS)
    for run in summary["check_runs"]:  # every kind ran in a worker to a verdict
        assert run["status"] == "succeeded", run
        assert run["verdict"] in ("pass", "fail", "inconclusive")
        assert run["manifest_digest"]
    assert runs_by_kind["weights_fingerprint"]["verdict"] == "pass"
    assert_dossiers_verify_offline(summary)
    assert "safety-lora" in summary["model_version"]  # the release is the tuned child version
    assert "Catalog: 1 confirmed feature(s) (1 newly)" in runs[0].stdout
    # A random tiny model cannot meet the policy's bars: the gate says which checks block it,
    # and the approvals the reviewers signed are counted but are not enough on their own.
    assert sorted(
        (d["reviewer"], d["decision"], d["covers_current_evidence"]) for d in summary["decisions"]
    ) == [("demo-reviewer-1", "approve", True), ("demo-reviewer-2", "approve", True)]
    failing = {
        r["check"] for r in summary["gate"]["reasons"] if r["code"] == "blocking_check_not_passed"
    }
    blocking_failed = {
        run["check"]
        for run in summary["check_runs"]
        if run["verdict"] != "pass" and run["blocking"]
    }
    assert failing == blocking_failed
    assert summary["gate"]["state"] == ("approved" if not failing else "in_review")
    if failing:
        assert "--decision waive" in runs[0].stdout
    assert "already approved the current evidence" in runs[1].stdout
    keys = sorted(path.name for path in (tmp_path / "var" / "demo" / "keys").iterdir())
    assert keys == ["demo-reviewer-1.pem", "demo-reviewer-2.pem"]
    verified = _manage(tmp_path / "var", "verify_ledger")
    assert verified.returncode == 0, verified.stderr
    assert "ledger verifies" in verified.stdout
    credentials = json.loads((tmp_path / "var" / "demo" / "credentials.json").read_text())
    assert set(credentials) == {
        "demo-submitter",
        "demo-reviewer-1",
        "demo-reviewer-2",
        "demo-admin",
        "demo-auditor",
    }
    for username, password in credentials.items():
        assert f"{username}" in runs[0].stdout
        assert password in runs[0].stdout
    assert not (ROOT / "control").exists()


def assert_dossiers_verify_offline(summary: dict) -> None:
    """Both releases (the base version's evaluation and the tuned version's release) exported a
    dossier, and each bundle verifies with the offline verifier alone."""
    assert sorted(d["purpose"] for d in summary["dossiers"]) == ["evaluation", "release"]
    for dossier in summary["dossiers"]:
        assert dossier["status"] == "succeeded", dossier
        folder = Path(dossier["directory"])
        assert (folder / "dossier.pdf").read_bytes().startswith(b"%PDF")
        checked = subprocess.run(
            [
                sys.executable,
                str(ROOT / "audits" / "dossier" / "verify.py"),
                str(folder / "bundle.zip"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr
