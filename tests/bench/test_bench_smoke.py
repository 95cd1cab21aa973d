"""The benchmarks in bench/ run end to end on a tiny model and print well-formed JSON lines.

Their numbers are not checked here (a tiny model's timings are noise); that every script still
runs against the current engine and check signatures is. The three scripts run side by side
with --quick, one torch thread each, to keep this test short.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import save_random_lens, save_tiny_llama

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ("activation_audit", "circuit_graph", "worker_cache")
REQUIRED_KEYS = {
    "bench",
    "measure",
    "value",
    "unit",
    "baseline",
    "ratio",
    "goal",
    "meets_goal",
    "machine",
    "model",
    "notes",
}
MACHINE_KEYS = {"cpu", "cores", "torch_threads", "load_average"}


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    base = tmp_path_factory.mktemp("bench")
    model, lens = save_tiny_llama(base / "model"), save_random_lens(base / "lens")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    started = {
        name: subprocess.Popen(
            [
                sys.executable,
                f"bench/{name}.py",
                "--quick",
                "--model",
                str(model),
                "--lens",
                str(lens),
            ],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in SCRIPTS
    }
    runs = {}
    for name, process in started.items():  # a child that fills its pipe just waits its turn
        out, err = process.communicate(timeout=300)
        runs[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return runs


@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_prints_one_json_measurement_per_line(bench_runs, script):
    run = bench_runs[script]
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert lines, "no measurements printed"
    for line in lines:
        assert set(line) >= REQUIRED_KEYS, REQUIRED_KEYS - set(line)
        assert line["bench"] == script
        assert {"name", "value"} <= set(line["baseline"])
        assert set(line["machine"]) >= MACHINE_KEYS
        assert line["meets_goal"] is None or isinstance(line["meets_goal"], bool)
        assert (line["goal"] is None) == (line["meets_goal"] is None)


def test_activation_audit_states_both_goals_of_the_issue(bench_runs):
    lines = [json.loads(line) for line in bench_runs["activation_audit"].stdout.splitlines()]
    goals = {line["measure"]: line["goal"] for line in lines}
    assert goals["throughput_vs_truncated_forward"] == ">= 0.85"
    assert goals["throughput_vs_full_forward_then_sae"] == ">= 2.5"


def test_worker_cache_second_check_hits_the_cache(bench_runs):
    lines = [json.loads(line) for line in bench_runs["worker_cache"].stdout.splitlines()]
    cache = next(line for line in lines if line["measure"] == "cached_mib")
    assert cache["cache_stats"]["misses"] == 2  # model and lens, once, in the first check
    assert cache["cache_stats"]["hits"] > 0


LEDGER_MEASURES = {
    "inclusion_proof_ms",
    "consistency_proof_ms",
    "checkpoint_ms",
    "verify_crypto_events_per_s",
    "verify_crypto_vs_sha256_concat",
    "verify_columns_events_per_s",
    "verify_crypto_peak_mib",
    "verify_columns_peak_mib",
}


def test_ledger_proofs_runs_on_a_small_ledger():
    """bench/ledger_proofs.py --quick: a 200-event ledger in its own temporary SQLite file. The
    script exits non-zero if its ledger does not verify or a proof does not check out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.pop("DATABASE_URL", None)
    run = subprocess.run(
        [sys.executable, "bench/ledger_proofs.py", "--quick"],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert {line["measure"] for line in lines} == LEDGER_MEASURES
    for line in lines:
        assert set(line) >= (REQUIRED_KEYS - {"model"}) | {"n", "ledger"}
        assert (line["bench"], line["n"]) == ("ledger_proofs", 200)
        assert {"name", "value"} <= set(line["baseline"])
        assert (line["goal"] is None) == (line["meets_goal"] is None)


def test_dossier_export_runs_on_a_small_release():
    """bench/dossier_export.py --quick: a small release in its own temporary SQLite database,
    exported; the script exits non-zero if the export fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    run = subprocess.run(
        [sys.executable, "bench/dossier_export.py", "--quick"],
        cwd=ROOT,
        env={**env, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"},
        text=True,
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    assert lines, "no measurements printed"
    for line in lines:
        assert line["bench"] == "dossier_export"
        assert {"name", "value"} <= set(line["baseline"])
        assert (line["goal"] is None) == (line["meets_goal"] is None)
