"""The web image has no torch: the web process (and the light Celery roles that run from the
same image: beat and the ops worker) must serve without ever importing the microscope.

A fresh process imports the WSGI application with every installed package the web image does
not install made impossible to import (the torch stack among them; docker/requirements.py web
says what the image installs), serves API, UI, admin and static requests through it under
production settings, runs the ops queue's tasks, and reports which modules it loaded. Optional
imports (DRF's of pygments, Celery's of greenlet) fall back as they would in the image; a
required one fails the test."""

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from knox.models import get_token_model
from packaging.utils import canonicalize_name

from audits import current_actor
from tests.integration.workers import ROOT, worker_env
from tests.operations.test_docker_files import _closure, _requirements

pytestmark = pytest.mark.django_db(transaction=True)

TORCH_STACK = ("torch", "transformers", "sae_lens", "peft", "gguf", "accelerate")

SERVE = textwrap.dedent(
    """
    import importlib.abc, io, json, sys
    from wsgiref.util import setup_testing_defaults

    AT_START = set(sys.modules)  # the interpreter's own start-up (site, .pth files)

    BLOCKED = set(json.loads(open(sys.argv[1]).read()))

    class NotInTheWebImage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is not installed in the web image", name=name)

    sys.meta_path.insert(0, NotInTheWebImage())

    from config.wsgi import application

    def serve(method, path, token=None, body=b""):
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path.split("?")[0],
                   "QUERY_STRING": path.partition("?")[2], "HTTP_HOST": "localhost",
                   "HTTP_X_FORWARDED_PROTO": "https", "wsgi.input": io.BytesIO(body),
                   "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/json"}
        if token:
            environ["HTTP_AUTHORIZATION"] = f"Token {token}"
        setup_testing_defaults(environ)
        status = []
        chunks = application(environ, lambda s, headers, exc=None: status.append(s))
        b"".join(chunks)
        return int(status[0].split()[0])

    token, release = sys.argv[2], sys.argv[3]
    login = json.dumps({"username": "auditor", "password": "auditor-pw-123456"}).encode()
    statuses = {
        "healthz": serve("GET", "/healthz"),
        "landing": serve("GET", "/"),
        "login page": serve("GET", "/login/"),
        "admin login": serve("GET", "/admin/login/"),
        "static": serve("GET", "/static/admin/css/base.css"),
        "token login": serve("POST", "/api/v1/auth/token/", body=login),
        "me": serve("GET", "/api/v1/me/", token),
        "releases": serve("GET", "/api/v1/releases/", token),
        "release": serve("GET", f"/api/v1/releases/{release}/", token),
        "gate": serve("GET", f"/api/v1/releases/{release}/gate/", token),
        "check runs": serve("GET", f"/api/v1/check-runs/?release={release}", token),
        "policies": serve("GET", "/api/v1/policies/", token),
        "ledger": serve("GET", "/api/v1/ledger/checkpoint/", token),
        "schema": serve("GET", "/api/schema/", token),
    }

    # Beat and the ops worker run from the web image too: every task module imports, and the
    # ops queue's tasks run.
    from config.celery import app
    app.loader.import_default_modules()
    for name in ("operations.sweep_webhook_deliveries", "interp_jobs.sign_ledger_checkpoint",
                 "interp_jobs.reconcile_check_runs", "operations.purge_expired_tokens"):
        app.tasks[name].apply().get()

    loaded = sorted(m for m in set(sys.modules) - AT_START if m.split(".")[0] in BLOCKED)
    print(json.dumps({"statuses": statuses, "loaded": loaded}))
    """
)


def modules_not_in_the_web_image() -> list[str]:
    """Top-level modules of every installed distribution the web image does not install."""
    web = _closure(_requirements("web"))
    blocked = {
        module
        for module, dists in metadata.packages_distributions().items()
        if module not in sys.stdlib_module_names
        and not {canonicalize_name(d) for d in dists} & (web | {"assay"})
    }
    assert set(TORCH_STACK) <= blocked
    return sorted(blocked)


def test_the_web_process_serves_without_the_microscope(
    production_passwords, personas, checked_release, tmp_path
):
    with current_actor.acting_as(personas.auditor):
        token = get_token_model().objects.create(user=personas.auditor)[1]
    env = worker_env(
        "filesystem://",
        broker_dir=tmp_path / "broker",
        ASSAY_HTTPS="true",
        ASSAY_BEHIND_PROXY="true",
        ASSAY_LOG_FORMAT="json",
    )
    blocked = tmp_path / "blocked.json"
    blocked.write_text(json.dumps(modules_not_in_the_web_image()))
    result = subprocess.run(
        [sys.executable, "-c", SERVE, str(blocked), token, str(checked_release.pk)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    statuses = report["statuses"]
    assert statuses.pop("landing") in (200, 302)
    assert statuses.pop("token login") == 201
    assert set(statuses.values()) == {200}, statuses
