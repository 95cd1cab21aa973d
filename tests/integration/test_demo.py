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
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ASSAY_", "DATABASE_URL", "CELERY_"))}
    env.update({"ASSAY_VAR_DIR": str(var_dir), "ASSAY_SECRET_KEY": "demo-test-" + "k" * 40,
                "DJANGO_SETTINGS_MODULE": "config.settings"})
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_demo_runs_twice_signs_and_writes_a_summary(tmp_path):
    model = tmp_path / "var" / "models" / "tiny"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "model.safetensors").write_bytes(b"\x00" * 4096)
    assert _manage(tmp_path / "var", "migrate", "--noinput").returncode == 0

    runs = [_manage(tmp_path / "var", "demo", "--no-serve", "--model", f"hf_dir:{model}")
            for _ in range(2)]

    for result in runs:
        assert result.returncode == 0, result.stderr + result.stdout
    assert "Opened release" in runs[0].stdout and "Reusing release" in runs[1].stdout
    summary = json.loads((tmp_path / "var" / "demo" / "summary.json").read_text())
    assert summary["check_runs"] == [{
        "check": "weights-fingerprint", "kind": "weights_fingerprint", "status": "succeeded",
        "verdict": "pass", "attempt": 1, "summary": summary["check_runs"][0]["summary"],
        "error": "", "manifest_digest": summary["check_runs"][0]["manifest_digest"]}]
    assert summary["gate"] == {"state": "approved", "may_ship": True, "reasons": []}
    assert sorted((d["reviewer"], d["decision"], d["covers_current_evidence"])
                  for d in summary["decisions"]) == [
        ("demo-reviewer-1", "approve", True), ("demo-reviewer-2", "approve", True)]
    assert "already approved the current evidence" in runs[1].stdout
    keys = sorted(path.name for path in (tmp_path / "var" / "demo" / "keys").iterdir())
    assert keys == ["demo-reviewer-1.pem", "demo-reviewer-2.pem"]
    verified = _manage(tmp_path / "var", "verify_ledger")
    assert verified.returncode == 0, verified.stderr
    assert "ledger verifies" in verified.stdout
    credentials = json.loads((tmp_path / "var" / "demo" / "credentials.json").read_text())
    assert set(credentials) == {"demo-submitter", "demo-reviewer-1", "demo-reviewer-2",
                                "demo-admin", "demo-auditor"}
    for username, password in credentials.items():
        assert f"{username}" in runs[0].stdout and password in runs[0].stdout
    assert not (ROOT / "control").exists()
