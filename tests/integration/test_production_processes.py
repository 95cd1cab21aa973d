"""The production shape, run as processes: gunicorn with the production settings, a Celery
worker and beat on PostgreSQL and Redis, each started exactly as the containers start them
(docker/entrypoint.sh ROLE), and a release taken end to end through HTTP: register, open,
checks, two signatures, the gate client, a dossier export, webhooks, metrics. Then every
process is stopped with SIGTERM and must exit cleanly.

HTTPS: the processes run with ASSAY_HTTPS=true and ASSAY_BEHIND_PROXY=true, as a deployment
behind a TLS-terminating proxy does; the test puts a small proxy in front that adds
`X-Forwarded-Proto: https`, as that proxy would, so the production security settings (https
redirect, HSTS, secure cookies) are the ones under test, not switched off."""

import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
import zipfile
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import connection

from audits.roles import Role, grant
from tests.integration.workers import ROOT, stop_process_group, use_redis, wait_until
from tests.operations.conftest import running_receiver

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# The roles of docker/entrypoint.sh this test starts; tests/operations/test_docker_files.py
# checks that the compose stack runs exactly these.
ROLES_STARTED = ("migrate", "web", "worker", "beat")
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
METRICS_TOKEN = "production-test-metrics-token"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the processes ----------------------------------------------------------------------------


def production_env(tmp_path: Path, port: int, broker_env: dict) -> dict:
    secret = tmp_path / "secrets" / "secret_key"
    secret.parent.mkdir()
    secret.write_text(uuid.uuid4().hex * 2)
    env = {k: v for k, v in broker_env.items() if k != "ASSAY_SECRET_KEY"}
    env.update(
        {
            "ASSAY_PYTHON": sys.executable,
            "ASSAY_SECRET_KEY_FILE": str(secret),
            "ASSAY_HTTPS": "true",
            "ASSAY_BEHIND_PROXY": "true",
            "ASSAY_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "ASSAY_LOG_FORMAT": "json",
            "ASSAY_BIND": f"127.0.0.1:{port}",
            "ASSAY_WEB_WORKERS": "2",
            "ASSAY_METRICS_TOKEN": METRICS_TOKEN,
            "ASSAY_WEBHOOK_ALLOW_HTTP": "true",
            "ASSAY_PUBLIC_URL": "https://assay.test",
            "ASSAY_OPS_QUEUE": "ops",
            "ASSAY_WORKER_QUEUES": "cpu,ops",
            "ASSAY_WORKER_NAME": f"e2e-{uuid.uuid4().hex[:6]}",
            "ASSAY_RECONCILE_INTERVAL": "3",
            "ASSAY_READYZ_WORKER_TIMEOUT_MS": "5000",
            "ASSAY_CHECKPOINT_LOG": str(tmp_path / "checkpoints.jsonl"),
            "ASSAY_BEAT_SCHEDULE": str(tmp_path / "celerybeat-schedule"),
            "ASSAY_DOSSIER_ROOT": str(tmp_path / "dossiers"),
        }
    )
    return env


def run_role(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def role(env: dict, name: str, log: Path):
    """A long-running role; yields the process. Whoever leaves the block stops it (a test
    that already stopped it gracefully has checked how it exited)."""
    with log.open("w") as out:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT), name],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            stop_process_group(process)


def stop_gracefully(process: subprocess.Popen, timeout: float = 90) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=timeout)


# --- a TLS-terminating proxy stand-in, and HTTP helpers ---------------------------------------


@contextmanager
def https_proxy(upstream_port: int):
    """Forwards every request to gunicorn with X-Forwarded-Proto: https (dropping any the
    client sent), as the TLS proxy in front of a deployment does."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in HOP_BY_HOP and k.lower() != "x-forwarded-proto"
            }
            headers["X-Forwarded-Proto"] = "https"
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            upstream.close()
            self.send_response_only(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _forward

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def call(url: str, method="GET", token=None, body=None, headers=None):
    """(status, headers, body bytes), redirects not followed."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - loopback
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with _opener.open(request, timeout=120) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, {}, b""  # not listening (yet)


class Api:
    def __init__(self, base: str):
        self.base = base

    def json(self, method, path, token=None, body=None, expect=(200, 201, 202)):
        status, _, data = call(self.base + path, method, token, body)
        assert status in expect, f"{method} {path}: {status} {data[:2000]!r}"
        return json.loads(data) if data else None

    def token(self, username: str) -> str:
        body = {"username": username, "password": f"{username}-pw-123456"}
        return self.json("POST", "/api/v1/auth/token/", body=body)["token"]

    def poll(self, path, token, done, timeout=300, what=""):
        found = {}

        def check():
            found["answer"] = self.json("GET", path, token)
            return done(found["answer"])

        wait_until(check, timeout, lambda: f"{what or path} never got there: {found}")
        return found["answer"]


def tool(name: str, *args: str, token: str, server: str, timeout: float = 180):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env.update({"ASSAY_TOKEN": token, "ASSAY_SERVER": server})
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- the test ---------------------------------------------------------------------------------


@pytest.fixture
def production_hashers(settings):
    """Passwords hashed as production hashes them: the suite's fast MD5 hasher is unknown to
    processes started with the production settings. Asked for before `personas`."""
    from django.conf import global_settings

    settings.PASSWORD_HASHERS = global_settings.PASSWORD_HASHERS


def test_a_release_end_to_end_through_the_production_processes(
    production_hashers, personas, model_store, broker, tmp_path
):
    if connection.vendor != "postgresql":
        pytest.skip("the production shape runs on PostgreSQL (DATABASE_URL=postgres://…)")
    grant(personas.outsider, Role.PIPELINE)
    port = free_port()
    env = production_env(tmp_path, port, use_redis())
    direct = f"http://127.0.0.1:{port}"

    migrate = run_role(env, "migrate")
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    logs = {name: tmp_path / f"{name}.log" for name in ("web", "worker", "beat")}
    with ExitStack() as stack:
        processes = {name: stack.enter_context(role(env, name, logs[name])) for name in logs}
        base = stack.enter_context(https_proxy(port))
        receiver = stack.enter_context(running_receiver())
        api = Api(base)
        wait_until(
            lambda: call(direct + "/healthz")[0] == 200,
            120,
            lambda: f"web never became healthy:\n{logs['web'].read_text()[-3000:]}",
        )
        wait_until(
            lambda: call(direct + "/readyz")[0] == 200,
            180,
            lambda: (
                f"never ready: {call(direct + '/readyz')[2]!r}\n"
                f"{logs['worker'].read_text()[-3000:]}"
            ),
        )
        production_settings_hold(direct, base)
        release = release_end_to_end(api, personas, model_store, receiver, base, tmp_path)
        webhooks_were_delivered(api, receiver, release)
        metrics_are_scraped(api, base)
        logs_are_json_with_request_ids(api, base, logs)

        for name in ("web", "worker", "beat"):
            code = stop_gracefully(processes[name])
            assert code == 0, f"{name} exited {code}:\n{logs[name].read_text()[-3000:]}"

    verified = run_role(env, "manage", "verify_ledger", "--no-sign")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ledger verifies" in verified.stdout


def production_settings_hold(direct: str, base: str) -> None:
    status, headers, _ = call(direct + "/api/v1/me/")
    assert status == 301
    assert headers["Location"].startswith("https://")
    status, headers, _ = call(base + "/api/v1/me/")
    assert status == 401  # behind the proxy: https, so no redirect, and no credentials
    assert "max-age=" in headers["Strict-Transport-Security"]
    status, headers, body = call(base + "/static/admin/css/base.css")
    assert status == 200
    assert body


def release_end_to_end(api: Api, personas, model_store, receiver, base: str, tmp_path: Path):
    admin, submitter = api.token("admin"), api.token("submitter")
    hook = api.json("POST", "/api/v1/webhooks/", admin, {"name": "ci", "url": receiver.url})
    receiver.secret = hook["secret"]

    policy = api.json(
        "POST",
        "/api/v1/policies/",
        admin,
        {
            "name": "integrity",
            "approvals_required": 2,
            "required_checks": [{"key": "fingerprint", "kind": "weights_fingerprint"}],
        },
    )
    api.json("POST", f"/api/v1/policies/{policy['id']}/publish/", admin)
    api.json(
        "POST",
        "/api/v1/policy-assignments/",
        admin,
        {"family": "tiny", "policy_name": "integrity"},
    )
    model = api.json(
        "POST",
        "/api/v1/model-versions/",
        submitter,
        {
            "family": "tiny",
            "version": "1",
            "format": "hf_dir",
            "source_path": str((model_store / "tiny").resolve()),
        },
    )
    api.poll(
        f"/api/v1/model-versions/{model['id']}/",
        submitter,
        lambda m: m["digest_status"] == "computed",
        what="the model's digests (a worker job)",
    )
    release = api.json("POST", "/api/v1/releases/", submitter, {"model_version": model["id"]})
    api.poll(
        f"/api/v1/releases/{release['id']}/",
        submitter,
        lambda r: r["state"] == "in_review",
        what="the fingerprint check (a worker job)",
    )

    for who in ("reviewer", "reviewer2"):
        token, key = api.token(who), str(tmp_path / f"{who}.pem")
        for args in (
            ("keygen", key),
            ("register", "--key", key, "--yes"),
            (
                "sign",
                "--release",
                release["id"],
                "--decision",
                "approve",
                "--yes",
                "--rationale",
                "Read the fingerprint evidence.",
                "--key",
                key,
            ),
        ):
            result = tool("assay_review.py", *args, token=token, server=base)
            assert result.returncode == 0, result.stdout + result.stderr

    gate = api.json("GET", f"/api/v1/releases/{release['id']}/gate/", submitter)
    pipeline = api.token("outsider")  # the pipeline role: gate answers only
    result = tool(
        "assay_gate.py",
        "--release",
        release["id"],
        "--policy-digest",
        gate["policy"]["digest"],
        "--weights-digest",
        gate["model_version"]["weights_digest"],
        "--timeout",
        "60",
        "--interval",
        "1",
        "--junit",
        str(tmp_path / "gate.xml"),
        token=pipeline,
        server=base,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "may ship" in result.stdout
    export_the_dossier(api, api.token("auditor"), release["id"], tmp_path)
    return release


def export_the_dossier(api: Api, token: str, release_id: str, tmp_path: Path) -> None:
    export = api.json("POST", f"/api/v1/releases/{release_id}/dossier/", token)
    done = api.poll(
        f"/api/v1/dossiers/{export['id']}/",
        token,
        lambda e: e["status"] in ("succeeded", "failed"),
        timeout=600,
        what="the dossier export (a worker job)",
    )
    assert done["status"] == "succeeded", done
    assert done["pdf_url"].endswith(f"/api/v1/dossiers/{export['id']}/dossier.pdf")
    assert done["bundle_url"].endswith(f"/api/v1/dossiers/{export['id']}/bundle.zip")
    downloads = {}
    for name in ("dossier.pdf", "bundle.zip"):
        status, headers, body = call(
            f"{api.base}/api/v1/dossiers/{export['id']}/{name}", token=token
        )
        assert status == 200, (name, status, body[:500])
        downloads[name] = (headers, body)
    pdf_headers, pdf = downloads["dossier.pdf"]
    assert pdf_headers["Content-Type"] == "application/pdf"
    assert pdf.startswith(b"%PDF-")
    assert hashlib.sha256(pdf).hexdigest() == done["pdf_sha256"]
    assert len(pdf) == done["pdf_size"]
    bundle_headers, bundle = downloads["bundle.zip"]
    assert bundle_headers["Content-Type"] == "application/zip"
    assert hashlib.sha256(bundle).hexdigest() == done["bundle_sha256"]
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        manifest = archive.read("manifest.json")
        pdf_digest = json.loads(archive.read("dossier-pdf.json"))
        verifier = archive.read("verify.py")
    assert hashlib.sha256(manifest).hexdigest() == done["manifest_sha256"]
    assert pdf_digest["sha256"] == done["pdf_sha256"]
    # What an auditor does with the downloads: the bundle's own verifier, offline.
    folder = tmp_path / "downloaded"
    folder.mkdir()
    (folder / "bundle.zip").write_bytes(bundle)
    (folder / "dossier.pdf").write_bytes(pdf)
    (folder / "verify.py").write_bytes(verifier)
    verified = subprocess.run(
        [sys.executable, "verify.py", "bundle.zip", "--pdf", "dossier.pdf"],
        cwd=folder,
        env={k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "DJANGO_"))},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The export is in the ledger, and the release's list of exports shows it.
    listed = api.json("GET", f"/api/v1/releases/{release_id}/dossier/", token)
    assert [e["id"] for e in listed if e["status"] == "succeeded"] == [export["id"]]


def webhooks_were_delivered(api: Api, receiver, release) -> None:
    from tests.operations.test_operations_doc import receiver_snippet

    wait_until(
        lambda: "approved" in [r.json["release"]["state"] for r in receiver.requests],
        120,
        lambda: f"deliveries so far: {[r.json['release']['state'] for r in receiver.requests]}",
    )
    verify, seen = receiver_snippet(), set()
    states = [
        verify(receiver.secret, r.headers, r.body, seen)["release"] for r in receiver.requests
    ]
    assert [s["state"] for s in states][-2:] == ["in_review", "approved"]
    assert {s["id"] for s in states} == {release["id"]}
    log = api.json(
        "GET", f"/api/v1/webhook-deliveries/?release={release['id']}", api.token("auditor")
    )
    assert {d["status"] for d in log["results"]} == {"succeeded"}


def metrics_are_scraped(api: Api, base: str) -> None:
    def scrape() -> str:
        status, _, body = call(
            base + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert status == 200
        return body.decode()

    wait_until(
        lambda: "assay_ledger_last_checkpoint_age_seconds " in scrape(),
        120,
        lambda: "beat never had a checkpoint signed",
    )
    text = scrape()
    assert (
        'assay_check_runs_finished_total{kind="weights_fingerprint",status="succeeded",'
        'verdict="pass"} 1.0'
    ) in text
    assert 'assay_queue_depth{queue="ops"}' in text
    assert "django_http_requests_total_by_view_transport_method_total" in text
    assert call(base + "/metrics")[0] == 401


def logs_are_json_with_request_ids(api: Api, base: str, logs: dict) -> None:
    request_id = f"e2e-{uuid.uuid4().hex}"
    _status, headers, _ = call(base + "/healthz", headers={"X-Request-ID": request_id})
    assert headers["X-Request-ID"] == request_id

    def access_line():
        for line in logs["web"].read_text().splitlines():
            entry = json.loads(line)  # every line of the web process is JSON
            if entry.get("request_id") == request_id and entry["logger"] == "assay.access":
                return entry
        return None

    wait_until(lambda: access_line() is not None, 30, lambda: "no access line with the id")
    assert access_line()["path"] == "/healthz"
    assert access_line()["status"] == 200
    worker_lines = [
        json.loads(line) for line in logs["worker"].read_text().splitlines() if line.startswith("{")
    ]
    assert any(entry.get("task_id") for entry in worker_lines)
