"""feature_discovery on a tiny model with a planted weapons feature (known answer), on a random
lens that cannot see the axis, and once on SmolLM2."""

import json
from xml.etree import ElementTree

import pytest

from interp_jobs.checks import feature_discovery
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from tests.factories import (
    GGUF,
    PLANTED_AXIS,
    PLANTED_FEATURE,
    REQUIRED,
    axis_only_tokens,
    catalog,
    demo_lens_dir,
    save_planted_lens,
    save_planted_model,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("planted-model")
    lens_dir = save_planted_lens(
        tmp_path_factory.mktemp("planted-lens"), save_planted_model(model_dir)
    )
    return {
        "model": ModelRef(
            path=str(model_dir),
            format="hf_dir",
            weights_digest="",
            file_digests={},
            name="planted@1",
        ),
        "lenses": (LensRef(path=str(lens_dir), digest="sha256:planted", name="tiny"),),
    }


def discover(make_context, refs=None, thresholds=None, **parameters):
    parameters.setdefault("axis", PLANTED_AXIS)
    context = make_context(
        feature_discovery, parameters=parameters, thresholds=thresholds, **(refs or {})
    )
    result = feature_discovery.run(context)
    return result, json.loads(result.artifacts[0].data)


def test_planted_feature_ranks_first_with_perfect_separation(make_context, planted):
    result, report = discover(make_context, planted, top_n=64, contexts_per_feature=2)
    top = report["features"][0]
    assert top["feature"] == PLANTED_FEATURE
    assert top["rank"] == 1
    assert top["auroc"] == 1.0
    assert (top["firing_rate_risk"], top["firing_rate_neutral"]) == (1.0, 0.0)
    assert top["effect_size"] > 3
    others = [row for row in report["features"] if row["feature"] != PLANTED_FEATURE]
    assert len(others) == 63
    assert max(row["auroc"] for row in others) < 0.9
    assert [row["rank"] for row in report["features"]] == list(range(1, 65))
    aurocs = [row["auroc"] for row in report["features"]]
    assert aurocs == sorted(aurocs, reverse=True)
    assert result.metrics["best_auroc_feature"] == PLANTED_FEATURE
    assert result.metrics["best_effect_size_feature"] == PLANTED_FEATURE
    assert result.metrics["chance_best_auroc"] < 0.9


def test_contexts_come_from_risk_prompts_and_peak_on_a_planted_token(make_context, planted):
    from interp_jobs.engine.loading.models import load_model

    _, report = discover(make_context, planted, top_n=1, contexts_per_feature=3)
    contexts = report["features"][0]["contexts"]
    assert len(contexts) == 3
    assert all(c["probe_id"] in report["risk_probe_ids"] for c in contexts)
    tokenizer = load_model(planted["model"].path, "hf_dir").tokenizer
    marked = set(axis_only_tokens(tokenizer, PLANTED_AXIS))
    for context in contexts:
        assert tokenizer(context["token"], add_special_tokens=False)["input_ids"][0] in marked


def test_passes_when_enough_features_meet_the_bar(make_context, planted):
    result, report = discover(
        make_context,
        planted,
        thresholds={"min_auroc": 0.95, "min_effect_size": 1.0, "min_features_found": 1},
    )
    assert result.verdict == PASS
    assert result.metrics["n_features_found"] == report["n_features_found"] == 1
    assert report["features"][0]["meets_bar"] is True
    assert report["features"][1]["meets_bar"] is False


def test_fails_when_fewer_features_than_required_meet_the_bar(make_context, planted):
    result, _ = discover(
        make_context, planted, thresholds={"min_auroc": 0.95, "min_features_found": 2}
    )
    assert result.verdict == FAIL
    assert "1 feature(s) meet the bar" in result.summary


def test_a_lens_that_cannot_see_the_axis_fails(make_context):
    result, report = discover(make_context, thresholds={"min_auroc": 0.9, "min_features_found": 1})
    assert result.verdict == FAIL
    assert report["n_features_found"] == 0
    assert result.metrics["best_auroc"] < 0.9


def test_without_thresholds_the_ranking_is_reported_but_inconclusive(make_context, planted):
    result, report = discover(make_context, planted, top_n=3)
    assert result.verdict == INCONCLUSIVE
    assert result.metrics["n_features_found"] is None
    assert len(report["features"]) == 3
    assert report["features"][0]["meets_bar"] is None


def test_evidence_states_its_kind_and_is_well_formed(make_context, planted):
    result, report = discover(make_context, planted, top_n=4)
    assert result.evidence_kind == report["evidence_kind"] == OBSERVED
    assert "does not show" in report["interpretation"]
    assert len(report["risk_probe_ids"]) == 50
    assert len(report["neutral_probe_ids"]) == 112
    json.dumps(result.metrics, allow_nan=False)
    svg = ElementTree.fromstring(result.artifacts[1].data)
    assert svg.tag.endswith("svg")
    assert result.artifacts[1].media_type == "image/svg+xml"
    assert result.provenance["lens"]["digest"] == "sha256:planted"
    assert result.provenance["lens"]["hook_name"] == "blocks.1.hook_resid_post"
    assert len(result.provenance["probe_set"]["digest"]) == 64


def test_catalogued_features_are_marked(make_context, planted):
    planted = {**planted, "catalog": catalog((PLANTED_FEATURE, "weapon words", "weapons"))}
    _, report = discover(make_context, planted, top_n=2)
    assert report["features"][0]["catalog_label"] == "weapon words"
    assert report["features"][1]["catalog_label"] is None


def test_same_inputs_and_seed_give_identical_evidence(make_context, planted):
    first, report = discover(make_context, planted, n_prompts=20, seed=1)
    second, _ = discover(make_context, planted, n_prompts=20, seed=1)
    assert first.artifacts[0].data == second.artifacts[0].data
    assert first.artifacts[1].data == second.artifacts[1].data
    assert len(report["risk_probe_ids"]) == len(report["neutral_probe_ids"]) == 20
    _, other = discover(make_context, planted, n_prompts=20, seed=2)
    assert other["risk_probe_ids"] != report["risk_probe_ids"]


@pytest.mark.parametrize(
    "parameters",
    [
        {"axis": "neutral"},
        {"axis": "bio"},
        {"axis": "weapons", "top_n": 0},
        {"axis": "weapons", "probe_set": "v9"},
        {"axis": "weapons", "colour": "red"},
        {},
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(parameters):
    with pytest.raises(CheckParameterError, match="parameters"):
        feature_discovery.Parameters.parse(parameters, what="parameters")


@pytest.mark.parametrize(
    "thresholds",
    [
        {"min_auroc": 0.8},
        {"min_features_found": 1},
        {"min_auroc": 1.5, "min_features_found": 1},
    ],
)
def test_incomplete_or_impossible_thresholds_are_refused(thresholds):
    with pytest.raises(CheckParameterError, match="thresholds"):
        feature_discovery.Thresholds.parse(thresholds, what="thresholds")


@pytest.mark.smollm2
@pytest.mark.skipif(not GGUF.is_file() and not REQUIRED, reason="demo model not in the store")
def test_discovery_runs_on_smollm2(make_context, tmp_path):
    refs = {
        "model": ModelRef(
            path=str(GGUF), format="gguf", weights_digest="", file_digests={}, name="smollm2"
        ),
        "lenses": (LensRef(path=str(demo_lens_dir(tmp_path)), name="smollm2"),),
    }
    result, report = discover(
        make_context,
        refs,
        axis="cyber",
        n_prompts=12,
        top_n=5,
        batch_size=12,
        thresholds={"min_auroc": 0.8, "min_features_found": 1},
    )
    print("\nSmolLM2 discovery:", result.verdict, result.metrics)
    assert result.verdict in (PASS, FAIL)
    assert len(report["features"]) == 5
    assert report["n_features_scanned"] >= 1024
    assert all(0.0 <= row["auroc"] <= 1.0 for row in report["features"])
    assert report["features"][0]["contexts"], "the top feature fired on some risk prompt"
    # SmolLM2's template adds a system prompt; it was located and left out of every statistic.
    assert result.provenance["n_prompts_whole_prompt_counted"] == 0
