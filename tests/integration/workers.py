"""Start real Celery worker processes for integration tests, against the test database."""

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

from config.broker import filesystem_transport_options
from config.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]


def database_url_for_workers() -> str:
    """The URL of the database this test run uses (the test database, not the main one)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_env(broker_url: str, broker_dir: Path | None = None, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "ASSAY_SECRET_KEY": "integration-test-secret-key-0123456789abcdef",
            "DATABASE_URL": database_url_for_workers(),
            "CELERY_BROKER_URL": broker_url,
            "ASSAY_EVIDENCE_ROOT": str(settings.ASSAY_EVIDENCE_ROOT),
            "ASSAY_MODEL_ROOTS": os.pathsep.join(str(root) for root in settings.ASSAY_MODEL_ROOTS),
            "ASSAY_VAR_DIR": str(Path(settings.ASSAY_EVIDENCE_ROOT).parent / "worker-var"),
            **extra,
        }
    )
    if broker_dir is not None:
        env["ASSAY_BROKER_DIR"] = str(broker_dir)
    return env


@contextmanager
def celery_worker(env: dict, log_path: Path, *, pool: str = "prefork", timeout: float = 90):
    """A worker process; yields once it reports ready, and stops it afterwards."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "-Q",
        "cpu",
        f"--pool={pool}",
        "--concurrency=1",
        "-n",
        f"test-{uuid.uuid4().hex[:8]}@%h",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "--purge",
        "--loglevel=INFO",
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for(
            lambda: "ready." in log_path.read_text(),
            timeout,
            lambda: f"worker did not start; log:\n{log_path.read_text()}",
            process=process,
        )
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen, grace: float = 15) -> None:
    """Stop a worker (or beat) and every process it started: a pool process still busy with
    a check must not outlive its test and write into the next one's database."""
    process.terminate()
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait_for(condition, timeout, describe, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited with {process.returncode}: {describe()}")
        time.sleep(0.2)
    raise AssertionError(describe())


def wait_until(condition, timeout: float, describe) -> None:
    _wait_for(condition, timeout, describe)


REDIS_URL = os.environ.get("ASSAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")


def use_redis():
    """Point at the test Redis database, emptied first: messages an earlier test left behind
    (unacknowledged deliveries are kept across worker restarts under acks_late) must not be
    delivered into this one."""
    redis.Redis.from_url(REDIS_URL).flushdb()  # fails loudly if the real Redis is not running
    celery_app.conf.broker_url = REDIS_URL
    celery_app.conf.broker_transport_options = {}
    return worker_env(REDIS_URL)


def use_filesystem(folder):
    celery_app.conf.broker_url = "filesystem://"
    celery_app.conf.broker_transport_options = filesystem_transport_options(folder)
    return worker_env("filesystem://", broker_dir=folder)
