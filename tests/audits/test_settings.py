"""Configuration comes from the environment and a bad value stops start-up, naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _start(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "DATABASE_URL"))}
    env.update({"DJANGO_SETTINGS_MODULE": "config.settings", **env_overrides})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"ASSAY_DEBUG": "1", "ASSAY_MAX_REQUEST_BYTES": "lots"}, "ASSAY_MAX_REQUEST_BYTES"),
        ({"ASSAY_DEBUG": "maybe"}, "ASSAY_DEBUG"),
        ({"ASSAY_DEBUG": "1", "ASSAY_DEVICE": "tpu"}, "ASSAY_DEVICE"),
        ({"ASSAY_DEBUG": "1", "DATABASE_URL": "notadb://x"}, "DATABASE_URL"),
        (
            {
                "ASSAY_DEBUG": "1",
                "ASSAY_CHECK_SOFT_TIME_LIMIT": "100",
                "ASSAY_CHECK_HARD_TIME_LIMIT": "50",
            },
            "ASSAY_CHECK_HARD_TIME_LIMIT",
        ),
        ({}, "ASSAY_SECRET_KEY"),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_variable(overrides, variable, tmp_path):
    result = _start({"ASSAY_VAR_DIR": str(tmp_path), **overrides})
    assert result.returncode != 0
    assert variable in result.stderr
    assert "started" not in result.stdout


def test_good_configuration_starts(tmp_path):
    result = _start({"ASSAY_VAR_DIR": str(tmp_path), "ASSAY_SECRET_KEY": "k" * 50})
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout
