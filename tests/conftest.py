"""Shared fixtures: personas, API clients, a model store, and a published policy."""

import hashlib
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from audits import actions
from audits.roles import Role, ensure_role_groups, grant


@dataclass
class Personas:
    submitter: User
    submitter2: User  # another submitter: may open releases, never manage someone else's
    reviewer: User
    reviewer2: User
    admin: User
    auditor: User
    outsider: User

    def client(self, name: str | None) -> APIClient:
        client = APIClient()
        if name is not None:
            client.force_authenticate(getattr(self, name))
        return client


PERSONA_ROLES = {
    "submitter": Role.SUBMITTER,
    "submitter2": Role.SUBMITTER,
    "reviewer": Role.REVIEWER,
    "reviewer2": Role.REVIEWER,
    "admin": Role.ADMIN,
    "auditor": Role.AUDITOR,
    "outsider": None,
}


@pytest.fixture
def personas(db) -> Personas:
    ensure_role_groups()
    users = {}
    for name, role in PERSONA_ROLES.items():
        users[name] = User.objects.create_user(username=name, password=f"{name}-pw-123456")
        if role is not None:
            grant(users[name], role)
    return Personas(**users)


@pytest.fixture
def model_store(settings, tmp_path):
    """A model store with one tiny 'Hugging Face directory' and one GGUF-named file."""
    store = tmp_path / "models"
    hf_dir = store / "tiny"
    hf_dir.mkdir(parents=True)
    (hf_dir / "config.json").write_text('{"model_type": "llama"}')
    (hf_dir / "tokenizer.json").write_text('{"version": "1.0"}')
    (hf_dir / "model.safetensors").write_bytes(hashlib.sha256(b"weights").digest() * 64)
    settings.ASSAY_MODEL_ROOTS = [store.resolve()]
    settings.ASSAY_EVIDENCE_ROOT = (tmp_path / "evidence").resolve()
    return store


def register_digested_model(personas, model_store, version="1"):
    """Register the tiny model and compute its digests as the worker job would."""
    from interp_jobs.worker.tasks import compute_model_digests

    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny",
        version=version,
        source_path=str((model_store / "tiny").resolve()),
        fmt="hf_dir",
    )
    compute_model_digests(str(model_version.pk))
    model_version.refresh_from_db()
    return model_version


@pytest.fixture
def model_version(personas, model_store):
    return register_digested_model(personas, model_store)


@pytest.fixture
def policy(personas):
    draft = actions.create_policy(
        actor=personas.admin,
        name="integrity",
        approvals_required=2,
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint"}],
    )
    published = actions.publish_policy(actor=personas.admin, policy=draft)
    # The default for every family: releases are opened under it without naming it.
    actions.assign_policy(actor=personas.admin, family="", policy_name="integrity")
    return published


@pytest.fixture(autouse=True)
def _own_checkpoint_log(settings, tmp_path):
    """Each test's checkpoints go to its own log: verify_ledger reads the deployment's log,
    and another test's checkpoints are not this test's ledger's."""
    settings.ASSAY_CHECKPOINT_LOG = tmp_path / "checkpoints.jsonl"


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle counters live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _append_only_tables_can_be_flushed(request):
    """Transactional tests end with a flush (DELETE on SQLite), which the append-only triggers
    refuse: lift them for the flush and put them back for the next test."""
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction")) or (
        "live_server" in request.fixturenames
    )
    if not transactional:
        yield
        return
    from django.db import connection

    from audits import triggers

    request.getfixturevalue("transactional_db")
    _execute(connection, triggers.create_statements(connection.vendor))
    yield
    if connection.vendor == "sqlite":
        _execute(connection, triggers.drop_statements(connection.vendor))


def _execute(connection, statements):
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
