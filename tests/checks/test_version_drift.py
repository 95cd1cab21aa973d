"""version_drift and decoder matching: known answers built by construction on tiny models."""

import json
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest
import torch

from interp_jobs.checks import inputs
from interp_jobs.checks import version_drift as check
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from interp_jobs.engine.analysis.matching import match_features
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading import cache
from tests.factories import catalog, demo_lens_dir, save_tiny_llama

SMALL = {
    "axes": ["weapons", "cyber"],
    "n_prompts_per_axis": 6,
    "n_control_prompts": 8,
    "probe_set": "v1",
    "n_boot": 200,
}
CATALOG = catalog(
    (3, "tiny weapons feature", "weapons"),
    (10, "tiny cyber feature", "cyber"),
    (40, "another weapons feature", "weapons"),
)


# ---- matching ----------------------------------------------------------------------------------


def _decoder(rows: int = 64, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))


def test_a_permuted_noisy_copy_of_a_decoder_maps_every_feature_back():
    old = _decoder()
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    new = old[perm] + 0.01 * _decoder(seed=2)  # new row j is old row perm[j]
    where = {int(old_index): j for j, old_index in enumerate(perm)}
    matches = match_features(old, new, range(64), min_cosine=0.9)
    assert [m.new_index for m in matches] == [where[i] for i in range(64)]
    assert all(m.cosine > 0.999 and m.best_new_index == m.new_index for m in matches)


def test_a_row_replaced_by_an_orthogonal_vector_is_reported_unmatched():
    old = _decoder()
    new = old.clone()
    v = _decoder(rows=1, seed=3)[0]
    new[5] = v - (v @ old[5]) / (old[5] @ old[5]) * old[5]  # orthogonal to old row 5
    matches = match_features(old, new, [4, 5, 6], min_cosine=0.7)
    assert [(m.old_index, m.new_index) for m in matches] == [(4, 4), (5, None), (6, 6)]
    unmatched = matches[1]
    assert not unmatched.matched
    assert unmatched.cosine is None
    assert unmatched.best_cosine < 0.7  # the best candidate is still recorded, below the bar


def test_matching_is_one_to_one_and_gives_a_contested_feature_to_the_closer_one():
    new = _decoder(rows=8)
    old = torch.stack([new[2] + 0.05 * new[0], new[2] + 0.2 * new[1]])  # both nearest new[2]
    first, second = match_features(old, new, [0, 1], min_cosine=0.0)
    assert first.new_index == 2
    assert first.best_new_index == 2
    assert second.best_new_index == 2
    assert second.new_index not in (2, None)


def test_matching_refuses_lenses_of_different_widths_and_missing_indices():
    with pytest.raises(PermanentEngineError, match="different widths"):
        match_features(_decoder(), _decoder(width=16), [0], min_cosine=0.5)
    with pytest.raises(PermanentEngineError, match=r"\[64\] do not exist"):
        match_features(_decoder(), _decoder(), [64], min_cosine=0.5)


# ---- the check ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-seed-1"), seed=1)


def _model(path, name: str) -> ModelRef:
    return ModelRef(
        path=str(path), format="hf_dir", weights_digest=f"sha256-{name}", file_digests={}, name=name
    )


def _run(make_context, tiny_model_dir, parameters=None, thresholds=None, **fields):
    fields.setdefault("catalog", CATALOG)
    fields.setdefault("baseline_model", _model(tiny_model_dir, "tiny@0"))
    context = make_context(
        check, parameters={**SMALL, **(parameters or {})}, thresholds=thresholds, **fields
    )
    return check.run(context)


def _report(result) -> dict:
    return json.loads(next(a.data for a in result.artifacts if a.title == "drift.json"))


def _permuted_lens(source: Path, target: Path, perm: torch.Tensor, orthogonal: int | None = None):
    """A copy of the lens whose feature j is the source's feature perm[j] (optionally with one
    decoder row turned orthogonal to what it was)."""
    from interp_jobs.engine.loading.lenses import load_lens

    lens = load_lens(source)
    with torch.no_grad():
        lens.W_enc.copy_(lens.W_enc[:, perm])
        lens.b_enc.copy_(lens.b_enc[perm])
        lens.W_dec.copy_(lens.W_dec[perm])
        if orthogonal is not None:
            row, v = lens.W_dec[orthogonal], torch.ones(lens.W_dec.shape[1])
            lens.W_dec[orthogonal] = v - (v @ row) / (row @ row) * row
    lens.save_model(target)
    return target


def test_a_model_compared_with_itself_has_not_drifted(make_context, tiny_model_dir):
    result = _run(
        make_context,
        tiny_model_dir,
        thresholds={
            "max_lost_risk_features": 0,
            "max_firing_rate_change": 0.0,
            "max_new_risk_features": 0,
        },
    )
    report = _report(result)
    assert result.verdict == PASS
    assert result.evidence_kind == report["evidence_kind"] == OBSERVED
    assert "not an intervention" in report["interpretation"]
    for row in report["features"]:
        assert row["status"] == "kept"
        assert row["new_index"] == row["index"]
        for stats in row["per_axis"].values():
            assert stats["firing_rate_change"] == 0
            assert stats["mean_max_activation_change"] == 0
    assert result.metrics["max_abs_firing_rate_change"] == 0
    assert report["new_risk_features"] == []
    assert report["lost"] == []


def test_two_differently_seeded_models_have_drifted(
    make_context, tiny_model_dir, other_model_dir, tiny_lens_dir
):
    from interp_jobs.engine.analysis.features import prompt_feature_stats, subset
    from interp_jobs.engine.loading.lenses import load_lens
    from interp_jobs.engine.loading.models import load_model
    from interp_jobs.probes import load_probe_set

    # A firing threshold at the old model's median score of feature 3 puts its old firing rate
    # strictly between 0 and 1, where a different model can move it either way.
    prompts = [p.prompt for p in subset(load_probe_set().for_axis("weapons"), 6, 0)]
    old = prompt_feature_stats(
        load_model(tiny_model_dir, "hf_dir"), load_lens(tiny_lens_dir), prompts, [3]
    ).max[:, 0]
    result = _run(
        make_context,
        tiny_model_dir,
        thresholds={"max_firing_rate_change": 0.0},
        parameters={"firing_threshold": float(old.median())},
        model=_model(other_model_dir, "tiny@1"),
    )
    report = _report(result)
    changes = [
        stats["mean_max_activation_change"]
        for row in report["features"]
        for stats in row["per_axis"].values()
    ]
    assert any(abs(c) > 1e-3 for c in changes)
    assert 0 < report["features"][0]["per_axis"]["weapons"]["old"]["firing_rate"] < 1
    assert result.metrics["max_abs_firing_rate_change"] > 0
    assert result.verdict == FAIL
    models = result.provenance["models"]
    assert (models["old"]["weights_digest"], models["new"]["weights_digest"]) == (
        "sha256-tiny@0",
        "sha256-tiny@1",
    )


def test_matched_lenses_follow_a_permutation_and_report_a_lost_feature(
    make_context, tiny_model_dir, tiny_lens_dir, tmp_path
):
    perm = torch.randperm(64, generator=torch.Generator().manual_seed(7))
    where = {int(old): j for j, old in enumerate(perm)}
    new_dir = _permuted_lens(tiny_lens_dir, tmp_path / "new-lens", perm, orthogonal=where[10])
    lenses = (LensRef(str(tiny_lens_dir), "d-old", "old"), LensRef(str(new_dir), "d-new", "new"))
    result = _run(
        make_context,
        tiny_model_dir,
        lenses=lenses,
        catalog=catalog((3, "w", "weapons"), (10, "c", "cyber"), lens="old"),
        parameters={"mode": "matched_lenses", "old_lens": "old", "new_lens": "new"},
        thresholds={"max_lost_risk_features": 0},
    )
    report = _report(result)
    kept, lost = report["features"]
    assert (kept["index"], kept["new_index"], kept["status"]) == (3, where[3], "kept")
    assert kept["cosine"] == pytest.approx(1.0, abs=1e-5)
    for stats in kept["per_axis"].values():  # same model, same feature: same firing
        assert stats["firing_rate_change"] == pytest.approx(0.0, abs=1e-9)
    assert (lost["index"], lost["new_index"], lost["status"]) == (10, None, "lost")
    assert "better than random directions" in lost["lost_reason"]
    assert kept["match_p_value"] < 0.01  # far above the random-direction null
    assert kept["fires_alike"] is True  # same model, same feature: correlation 1
    assert result.verdict == FAIL
    assert result.metrics["n_lost_risk_features"] == 1
    assert result.provenance["lenses"]["old"]["digest"] == "d-old"
    assert result.provenance["lenses"]["new"]["digest"] == "d-new"


def _brute_auroc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_new_risk_features_are_exactly_the_uncatalogued_ones_above_the_auroc_bar(
    make_context, tiny_model_dir, tiny_lens_dir, tmp_path
):
    from interp_jobs.engine.analysis.features import prompt_feature_stats, subset
    from interp_jobs.probes import load_probe_set

    perm = torch.arange(64)
    new_dir = _permuted_lens(tiny_lens_dir, tmp_path / "same-lens", perm)
    lenses = (LensRef(str(tiny_lens_dir), "", "old"), LensRef(str(new_dir), "", "new"))
    params = {
        "mode": "matched_lenses",
        "old_lens": "old",
        "new_lens": "new",
        "axes": ["cyber"],
        "new_feature_min_auroc": 0.6,
        "max_listed_new": 1000,
    }
    result = _run(
        make_context,
        tiny_model_dir,
        lenses=lenses,
        parameters=params,
        catalog=catalog((3, "w", "weapons"), lens="old"),
    )
    context = make_context(check, parameters=params, lenses=lenses)
    loaded = inputs.load_model_for(context)
    lens, _ = inputs.load_lens_for(context, "new")
    probes = load_probe_set()
    risk = prompt_feature_stats(
        loaded, lens, [p.prompt for p in subset(probes.for_axis("cyber"), 6, 0)]
    ).max
    neutral = prompt_feature_stats(
        loaded, lens, [p.prompt for p in subset(probes.neutral_prompts, 8, 0)]
    ).max
    expected = sorted(
        j
        for j in range(64)
        if j != 3
        and (risk[:, j] > 0).double().mean() >= 0.5
        and _brute_auroc(risk[:, j].tolist(), neutral[:, j].tolist()) >= 0.6
    )
    found = sorted(entry["index"] for entry in _report(result)["new_risk_features"])
    assert expected
    assert found == expected
    assert result.metrics["n_new_risk_features"] == len(expected)


def test_same_inputs_give_byte_identical_evidence(make_context, tiny_model_dir, other_model_dir):
    first = _run(make_context, tiny_model_dir, model=_model(other_model_dir, "tiny@1"))
    cache.clear_cache()
    second = _run(make_context, tiny_model_dir, model=_model(other_model_dir, "tiny@1"))
    assert first.artifacts == second.artifacts
    assert first.metrics == second.metrics
    assert first.verdict == INCONCLUSIVE
    assert ElementTree.fromstring(first.artifacts[1].data).tag.endswith("svg")


def test_a_missing_baseline_model_is_a_clear_parameter_error(make_context, tiny_model_dir):
    with pytest.raises(CheckParameterError, match="no baseline"):
        _run(make_context, tiny_model_dir, baseline_model=None)


@pytest.mark.parametrize(
    ("parameters", "fields", "message"),
    [
        ({"lens": "nope"}, {}, "no lens named 'nope'"),
        ({}, {"catalog": ()}, "no features of lens 'tiny'"),
        ({}, {"catalog": catalog((64, "too far", "weapons"))}, r"\[64\] are out of range"),
    ],
)
def test_bad_inputs_are_clear_parameter_errors(
    make_context, tiny_model_dir, parameters, fields, message
):
    with pytest.raises(CheckParameterError, match=message):
        _run(make_context, tiny_model_dir, parameters, **fields)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"mode": "matched_lenses", "old_lens": "a"}, "needs old_lens and new_lens"),
        ({"old_lens": "a"}, "takes lens, not old_lens"),
        ({"min_cosine": 1.5}, "min_cosine"),
        ({"new_feature_min_auroc": 0.5}, "new_feature_min_auroc"),
        ({"firing_treshold": 0.1}, "firing_treshold"),
    ],
)
def test_bad_parameters_are_refused_before_running(parameters, message):
    with pytest.raises(CheckParameterError, match=message):
        check.Parameters.parse(parameters, what="parameters")


# ---- SmolLM2 -----------------------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_compared_with_itself_through_a_shared_lens_has_zero_drift(tmp_path, make_context):
    from tests.factories import GGUF, REQUIRED

    if not GGUF.is_file() and not REQUIRED:
        pytest.skip(f"demo model not in the store ({GGUF})")
    lens_dir = demo_lens_dir(tmp_path / "lens")
    smollm2 = ModelRef(
        path=str(GGUF), format="gguf", weights_digest="", file_digests={}, name="smollm2"
    )
    context = make_context(
        check,
        parameters={"axes": ["weapons", "cyber"], "n_prompts_per_axis": 6, "n_control_prompts": 6},
        thresholds={"max_lost_risk_features": 0, "max_firing_rate_change": 0.0},
        model=smollm2,
        baseline_model=smollm2,
        lenses=(LensRef(path=str(lens_dir), name="lens"),),
        catalog=catalog(
            (0, "f0", "weapons"), (1, "f1", "cyber"), (2, "f2", "weapons"), lens="lens"
        ),
    )
    start = time.perf_counter()
    result = check.run(context)
    print(
        f"\nsmollm2 self-drift ({lens_dir.name}, {time.perf_counter() - start:.1f}s): "
        f"{result.summary}\n{json.dumps(result.metrics)}"
    )
    assert result.verdict == PASS
    assert result.metrics["max_abs_firing_rate_change"] == 0
    assert result.metrics["n_new_risk_features"] == 0


# ---- matching by encoder and decoder, against chance; firing alike ----------------------------


def test_the_random_direction_null_is_what_random_unit_vectors_reach():
    from interp_jobs.engine.analysis.matching import null_summary, random_direction_null

    null = random_direction_null(32, 64, draws=300, seed=0)
    summary = null_summary(null)
    # best of 64 min-of-two cosines in 32 dimensions: clearly above 0, far below 1
    assert 0.1 < summary["median"] < summary["q99"] < 0.6
    assert torch.equal(null, random_direction_null(32, 64, draws=300, seed=0))


def test_a_decoder_match_whose_encoder_disagrees_is_not_a_match(tiny_lens_dir, tmp_path):
    from interp_jobs.engine.analysis.matching import (
        match_by_encoder_and_decoder,
        random_direction_null,
    )
    from interp_jobs.engine.loading.lenses import load_lens

    old = load_lens(tiny_lens_dir)
    new = load_lens(_permuted_lens(tiny_lens_dir, tmp_path / "new", torch.arange(64)))
    with torch.no_grad():
        new.W_enc[:, 5] = torch.randn(new.W_enc.shape[0])  # reads something else entirely
    null = random_direction_null(old.cfg.d_in, new.cfg.d_sae, draws=200)
    kept, changed = match_by_encoder_and_decoder(old, new, [4, 5], null)
    assert (kept.new_index, changed.new_index) == (4, None)
    assert kept.decoder_cosine == pytest.approx(1.0, abs=1e-5)
    assert kept.encoder_cosine == pytest.approx(1.0, abs=1e-5)
    assert changed.best_score < float(torch.quantile(null, 0.99))


def test_a_feature_that_fires_differently_on_the_new_model_is_moved(
    make_context, tiny_model_dir, other_model_dir
):
    result = _run(
        make_context,
        tiny_model_dir,
        parameters={"min_activation_correlation": 0.99},
        thresholds={"max_moved_risk_features": 0},
        model=_model(other_model_dir, "tiny@1"),
    )
    report = _report(result)
    moved = [r for r in report["features"] if r["status"] == "moved"]
    assert moved
    assert all(r["fires_alike"] is False for r in moved)
    for row in moved:
        agreement = row["activation_agreement"]
        assert agreement["correlation"]["lower95"] < 0.99
        assert agreement["n_prompts"] == 6 + 6 + 8
    assert report["moved"]
    assert result.verdict == FAIL
    assert result.metrics["n_moved_risk_features"] == len(moved)


def test_firing_rates_carry_wilson_intervals_and_changes_paired_bootstrap_intervals(
    make_context, tiny_model_dir
):
    report = _report(_run(make_context, tiny_model_dir))
    stats = report["features"][0]["per_axis"]["weapons"]
    assert stats["old"]["firing_rate_interval"]["method"] == "wilson"
    assert stats["old"]["firing_rate_interval"]["n"] == 6
    assert stats["firing_rate_change_interval"]["method"].startswith("bootstrap")


def test_v2_reads_the_held_out_audit_split(make_context, tiny_model_dir):
    result = _run(make_context, tiny_model_dir, parameters={"probe_set": "v2"})
    assert result.provenance["split"]["split"] == "audit"
    assert result.provenance["split"]["held_out"] is True
