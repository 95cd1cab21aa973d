"""The catalog follows a model to its next version: version_drift with matched lenses carries
confirmed features to the new lens as proposals, and the ledger records what did not match."""

import pytest

from audits import actions
from audits.models import AuditEvent, CatalogFeature, CheckRun, Lens
from interp_jobs.worker.tasks import compute_model_digests, run_check, validate_lens
from tests.factories import save_random_lens, save_tiny_llama


def _version(personas, store, name, parent=None, seed=0):
    path = save_tiny_llama(store / name, seed=seed)
    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny",
        version=name,
        fmt="hf_dir",
        source_path=str(path.resolve()),
        parent=parent,
    )
    compute_model_digests(str(model_version.pk))
    model_version.refresh_from_db()
    return model_version


def _lens(personas, model_version, path):
    lens = actions.register_lens(
        actor=personas.submitter,
        model_version=model_version,
        name="mid",
        source_path=str(path.resolve()),
    )
    validate_lens(str(lens.pk))
    return Lens.objects.get(pk=lens.pk)


@pytest.fixture
def two_versions(personas, model_store, settings):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    old = _version(personas, model_store, "v1")
    new = _version(personas, model_store, "v2", parent=old, seed=1)
    old_lens = _lens(personas, old, save_random_lens(model_store / "lens-old", seed=3))
    # The new lens is the old one with its features shuffled: every feature has a match.
    new_lens_dir = save_random_lens(model_store / "lens-new", seed=3)
    from interp_jobs.engine.loading.lenses import load_lens

    lens = load_lens(new_lens_dir)
    import torch

    order = torch.randperm(lens.cfg.d_sae, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lens.W_dec.copy_(lens.W_dec[order])
        lens.W_enc.copy_(lens.W_enc[:, order])
        lens.b_enc.copy_(lens.b_enc[order])
    lens.save_model(new_lens_dir)
    _lens(personas, new, new_lens_dir)
    for index in (3, 11):
        feature = CatalogFeature.objects.create(
            lens=old_lens, index=index, label=f"f{index}", risk_axis="weapons"
        )
        actions.review_feature(
            actor=personas.reviewer,
            feature=feature,
            label=f"f{index}",
            risk_axis="weapons",
            status="confirmed",
        )
    return new, order


def test_drift_with_matched_lenses_carries_the_catalog(personas, two_versions):
    new, order = two_versions
    draft = actions.create_policy(
        actor=personas.admin,
        name="carry",
        checks=[
            {
                "key": "drift",
                "kind": "version_drift",
                "parameters": {
                    "mode": "matched_lenses",
                    "old_lens": "parent:mid",
                    "new_lens": "mid",
                    "min_cosine": 0.99,
                    "n_prompts_per_axis": 4,
                    "n_control_prompts": 4,
                    "axes": ["weapons"],
                },
            }
        ],
    )
    policy = actions.publish_policy(actor=personas.admin, policy=draft)
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=new, policy=policy, purpose="evaluation"
    )
    run = release.check_runs.get()
    run_check.apply(args=[str(run.pk)])
    run = CheckRun.objects.get(pk=run.pk)
    assert run.status == "succeeded", run.error
    carried = CatalogFeature.objects.filter(lens__model_version=new)
    position = {int(old): new_index for new_index, old in enumerate(order.tolist())}
    assert sorted((f.carried_from.index, f.index) for f in carried) == [
        (3, position[3]),
        (11, position[11]),
    ]
    assert all(f.status == "proposed" and f.match_cosine > 0.99 for f in carried)
    event = AuditEvent.objects.get(verb="catalog.carried")
    assert event.data["unmatched"] == []
    assert len(event.data["carried"]) == 2
