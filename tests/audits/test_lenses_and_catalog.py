"""Lenses are registered for a model version and validated against it by a job; catalog
features are confirmed or changed by people, with who and when recorded."""

import pytest

from audits import actions
from audits.models import AuditEvent, CatalogFeature, Lens
from interp_jobs.worker.tasks import compute_model_digests, validate_lens
from tests.factories import save_random_lens, save_tiny_llama


@pytest.fixture
def tiny_version(personas, model_store):
    path = save_tiny_llama(model_store / "tiny-llama")
    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny-llama",
        version="1",
        fmt="hf_dir",
        source_path=str(path.resolve()),
    )
    compute_model_digests(str(model_version.pk))
    return model_version


def _register(personas, model_version, path, name="mid"):
    return personas.client("submitter").post(
        "/api/v1/lenses/",
        {"model_version": str(model_version.pk), "name": name, "source_path": str(path)},
        format="json",
    )


def test_a_fitting_lens_is_validated_with_its_facts_and_digest(
    personas, tiny_version, model_store, settings
):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    path = save_random_lens(model_store / "lens-ok").resolve()
    response = _register(personas, tiny_version, path)
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "pending"
    validate_lens(response.json()["id"])
    lens = Lens.objects.get(pk=response.json()["id"])
    assert (lens.status, lens.hook_name, lens.d_in, lens.d_sae) == (
        "ready",
        "blocks.1.hook_resid_post",
        32,
        64,
    )
    assert len(lens.digest) == 64
    assert AuditEvent.objects.filter(verb="lens.validated", target_id=str(lens.pk)).exists()


def test_a_lens_of_the_wrong_width_fails_with_both_widths_named(
    personas, tiny_version, model_store, settings
):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    path = save_random_lens(model_store / "lens-wide", d_in=48).resolve()
    lens_id = _register(personas, tiny_version, path).json()["id"]
    validate_lens(lens_id)
    lens = Lens.objects.get(pk=lens_id)
    assert lens.status == "failed"
    assert "48" in lens.error
    assert "32" in lens.error


@pytest.mark.parametrize("where", ["/etc", "relative/dir", "missing"])
def test_lens_paths_must_be_lenses_inside_the_lens_roots(
    personas, tiny_version, model_store, settings, where
):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    path = model_store if where == "missing" else where
    response = _register(personas, tiny_version, path)
    assert response.status_code == 400
    assert "source_path" in response.json()
    assert not Lens.objects.exists()


def test_reviewers_confirm_catalog_features_and_it_is_recorded(
    personas, tiny_version, model_store, settings
):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    lens_id = _register(
        personas, tiny_version, save_random_lens(model_store / "l").resolve()
    ).json()["id"]
    feature = CatalogFeature.objects.create(
        lens_id=lens_id, index=7, label="bomb-making?", risk_axis="weapons"
    )
    url = f"/api/v1/catalog-features/{feature.pk}/"
    body = {"label": "explosives synthesis requests", "risk_axis": "weapons", "status": "confirmed"}
    assert personas.client("auditor").patch(url, body, format="json").status_code == 403
    response = personas.client("reviewer").patch(url, body, format="json")
    assert response.status_code == 200
    assert response.json()["reviewed_by"] == "reviewer"
    assert response.json()["reviewed_at"]
    event = AuditEvent.objects.get(verb="catalog_feature.reviewed")
    assert event.data["before"]["label"] == "bomb-making?"
    assert event.data["after"]["status"] == "confirmed"
    assert personas.client("reviewer").patch(url, {"index": 3}, format="json").status_code == 400


def test_a_lens_is_trained_by_a_job_and_recorded_with_its_training(
    personas, tiny_version, settings, tmp_path
):
    from interp_jobs.worker.tasks import train_lens

    settings.ASSAY_LENS_STORE = (tmp_path / "models" / "lenses").resolve()
    response = personas.client("submitter").post(
        "/api/v1/lenses/train/",
        {
            "model_version": str(tiny_version.pk),
            "name": "trained",
            "hook_name": "blocks.1.hook_resid_post",
            "d_sae": 64,
            "architecture": "topk",
            "n_tokens": 4000,
            "seq_len": 16,
            "batch_tokens": 128,
            "buffer_batches": 16,
            "eval_sequences": 8,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "training"
    train_lens(response.json()["id"])
    lens = Lens.objects.get(pk=response.json()["id"])
    assert lens.status == "ready", lens.error
    assert (lens.architecture, lens.d_sae, lens.hook_name) == (
        "topk",
        64,
        "blocks.1.hook_resid_post",
    )
    assert lens.training["request"]["n_tokens"] == 4000
    assert "explained_variance" in lens.training["fidelity"]["metrics"]
    assert len(lens.training["corpus"]["token_sha256"]) == 64
    assert AuditEvent.objects.filter(verb="lens.training_requested").exists()


def test_training_requests_are_validated(personas, tiny_version):
    response = personas.client("submitter").post(
        "/api/v1/lenses/train/",
        {
            "model_version": str(tiny_version.pk),
            "name": "bad",
            "hook_name": "rm -rf /",
            "d_sae": 2,
            "architecture": "magic",
            "n_tokens": 10,
        },
        format="json",
    )
    assert response.status_code == 400
    assert {"hook_name", "d_sae", "architecture", "n_tokens"} <= set(response.json())
    assert not Lens.objects.exists()
