"""Backup and restore as docs/operations.md describes them: docker/backup.sh, then
docker/restore.sh into an empty database and an empty evidence store, then verify_ledger."""

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings
from django.db import connection

from audits import ledger
from audits.models import CheckRun, Evidence
from tests.integration.workers import ROOT, database_url_for_workers

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
DOCKER = ROOT / "docker"


@pytest.fixture(autouse=True)
def needs_postgres():
    """Skipped before any backup is attempted when the tests run on SQLite."""
    if connection.vendor != "postgresql":
        pytest.skip("backups are taken with pg_dump: run with DATABASE_URL=postgres://…")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump / pg_restore are not installed")


@pytest.fixture
def empty_database():
    """A new, empty PostgreSQL database beside the test database; dropped afterwards."""
    db = connection.settings_dict
    name = f"{db['NAME']}_restore_{uuid.uuid4().hex[:8]}"
    admin = {
        "host": db["HOST"] or "127.0.0.1",
        "port": db["PORT"] or 5432,
        "user": db["USER"],
        "password": db["PASSWORD"] or None,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url_for_workers().rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(**admin) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    base.update(env)
    return subprocess.run(
        ["sh", str(DOCKER / name), *args],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=300,
    )


def deployment(database_url: str, evidence: Path, checkpoints: Path) -> dict:
    return {
        "DATABASE_URL": database_url,
        "ASSAY_EVIDENCE_ROOT": str(evidence),
        "ASSAY_CHECKPOINT_LOG": str(checkpoints),
    }


def verify_ledger(env: dict, *args: str) -> subprocess.CompletedProcess:
    return script(
        "entrypoint.sh",
        "manage",
        "verify_ledger",
        "--no-sign",
        *args,
        ASSAY_PYTHON=sys.executable,
        ASSAY_SECRET_KEY="restore-test-secret-key-0123456789abcdefghij",
        ASSAY_HTTPS="false",
        # The checkpoint key comes back from the secret store, not from the backup.
        ASSAY_LEDGER_KEY_FILE=str(settings.ASSAY_LEDGER_KEY_FILE),
        ASSAY_VAR_DIR=str(Path(env["ASSAY_EVIDENCE_ROOT"]).parent / "var"),
        **env,
    )


@pytest.fixture
def backed_up(approved_release, tmp_path):
    """A deployment with checks, evidence, signed decisions and a checkpoint, backed up."""
    ledger.checkpoint()
    source = deployment(
        database_url_for_workers(),
        Path(settings.ASSAY_EVIDENCE_ROOT),
        Path(settings.ASSAY_CHECKPOINT_LOG),
    )
    assert Path(source["ASSAY_CHECKPOINT_LOG"]).read_text().strip()
    backup = tmp_path / "backup"
    result = script("backup.sh", str(backup), **source)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in backup.iterdir()) == [
        "SHA256SUMS",
        "assay.pgdump",
        "checkpoints.jsonl",
        "evidence.tar",
    ]
    return backup


def restore(backup: Path, database_url: str, target: Path) -> dict:
    env = deployment(database_url, target / "evidence", target / "checkpoints" / "log.jsonl")
    result = script("restore.sh", str(backup), **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return env


def test_a_backup_restored_into_an_empty_database_and_store_verifies(
    backed_up, empty_database, tmp_path
):
    restored = restore(backed_up, empty_database, tmp_path / "restored")
    result = verify_ledger(restored)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ledger verifies" in result.stdout
    store = Path(restored["ASSAY_EVIDENCE_ROOT"])
    digests = [*Evidence.objects.values_list("sha256", flat=True)]
    digests += [
        *CheckRun.objects.exclude(manifest_digest="").values_list("manifest_digest", flat=True)
    ]
    assert digests
    assert all((store / digest[:2] / digest).is_file() for digest in digests)


def test_a_restore_missing_an_evidence_file_does_not_verify(backed_up, empty_database, tmp_path):
    restored = restore(backed_up, empty_database, tmp_path / "restored")
    evidence = Evidence.objects.first()
    victim = Path(restored["ASSAY_EVIDENCE_ROOT"]) / evidence.sha256[:2] / evidence.sha256
    victim.write_bytes(b"not what was measured")
    result = verify_ledger(restored)
    assert result.returncode != 0
    assert "MISMATCH" in result.stderr


def test_a_checkpoint_signed_after_the_backup_shows_the_gap(
    backed_up, empty_database, tmp_path, personas
):
    from audits import actions

    actions.create_policy(
        actor=personas.admin,
        name="after-the-backup",
        approvals_required=1,
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint"}],
    )
    later = tmp_path / "later.json"
    later.write_text(json.dumps(ledger.signed_checkpoint(ledger.checkpoint())))
    restored = restore(backed_up, empty_database, tmp_path / "restored")
    result = verify_ledger(restored, "--checkpoint", str(later))
    assert result.returncode != 0
    assert "were deleted" in result.stderr


def test_restore_refuses_a_store_that_is_not_empty(backed_up, empty_database, tmp_path):
    target = tmp_path / "restored"
    (target / "evidence").mkdir(parents=True)
    (target / "evidence" / "leftover").write_text("x")
    env = deployment(empty_database, target / "evidence", target / "log.jsonl")
    result = script("restore.sh", str(backed_up), **env)
    assert result.returncode == 1
    assert "not empty" in result.stderr
