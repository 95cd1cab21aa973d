"""The README's walkthrough, run as written: every shell block marked `<!-- tested -->`, in
order, as one script, against a live server and a worker process on the embedded broker."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.workers import celery_worker, use_filesystem

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def walkthrough() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- tested -->\n```sh\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 6, "the README's tested blocks went missing"
    return "set -euo pipefail\n" + "\n".join(blocks)


def test_the_readme_walkthrough_runs_as_written(
    live_server, broker, personas, model_store, tmp_path, settings
):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")},
        "ASSAY": live_server.url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "FAMILY": "tiny",
        "MODEL_DIR": str((model_store / "tiny").resolve()),
        "KEYS": str(tmp_path),
    }
    for who in ("submitter", "reviewer", "reviewer2", "admin", "auditor"):
        env[who.upper()] = who
        env[f"{who.upper()}_PASSWORD"] = f"{who}-pw-123456"
    with celery_worker(use_filesystem(tmp_path / "broker"), tmp_path / "worker.log"):
        result = subprocess.run(
            ["bash", "-c", walkthrough()],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['submitter']"  # the signed-in person's roles
    assert "pass" in lines  # the release's fingerprint check
    assert sum(line.startswith("recorded decision") for line in lines) == 2
    assert "True" in lines  # may_ship, with the pins the pipeline expects
    assert any(line.startswith("consistent:") for line in lines)
    assert any("is included in the signed tree" in line for line in lines)
