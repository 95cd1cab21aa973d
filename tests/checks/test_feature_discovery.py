"""feature_discovery on a tiny model with a planted weapons feature (known answer), on a random
lens that cannot see the axis, and once on SmolLM2.

The planted model marks the words of the *discovery* split's weapons prompts that no neutral
prompt has; held-out confirmation prompts reach the planted feature only through the words
they share with the discovery prompts, as a real feature would be tested."""

import json
from xml.etree import ElementTree

import pytest

from interp_jobs.checks import feature_discovery
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    CheckContext,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from interp_jobs.engine.analysis import features
from interp_jobs.probes import load_probe_set
from tests.factories import (
    GGUF,
    PLANTED_AXIS,
    PLANTED_FEATURE,
    REQUIRED,
    catalog,
    demo_lens_dir,
    save_planted_lens,
    save_planted_model_for,
)

SPLIT_OF = {p.id: p.split for p in load_probe_set("v2").prompts}
SPLIT_OF_TEXT = {p.prompt: p.split for p in load_probe_set("v2").prompts}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("planted-model")
    direction = save_planted_model_for(model_dir, splits="discovery")
    lens_dir = save_planted_lens(tmp_path_factory.mktemp("planted-lens"), direction)
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


@pytest.fixture(scope="module")
def planted_report(planted):
    """One run shared by the tests that only read its evidence."""
    context = CheckContext(
        parameters=feature_discovery.Parameters.parse(
            {"axis": PLANTED_AXIS, "top_n": 8, "contexts_per_feature": 2}, what="parameters"
        ),
        thresholds=feature_discovery.Thresholds.parse({}, what="thresholds"),
        **planted,
    )
    result = feature_discovery.run(context)
    return result, json.loads(result.artifacts[0].data)


def discover(make_context, refs=None, thresholds=None, **parameters):
    parameters.setdefault("axis", PLANTED_AXIS)
    context = make_context(
        feature_discovery, parameters=parameters, thresholds=thresholds, **(refs or {})
    )
    result = feature_discovery.run(context)
    return result, json.loads(result.artifacts[0].data)


def test_planted_feature_ranks_first_and_is_confirmed_on_held_out_prompts(planted_report):
    result, report = planted_report
    top = report["features"][0]
    assert (top["feature"], top["rank"]) == (PLANTED_FEATURE, 1)
    assert top["auroc"] == 1.0  # where it was selected
    assert (top["firing_rate_risk"], top["firing_rate_neutral"]) == (1.0, 0.0)
    assert top["discovery"]["auroc"]["value"] == 1.0
    confirmed = top["confirmation"]
    assert confirmed["auroc"]["method"] == "bootstrap-auroc"
    n_confirm = len(report["confirmation_probe_ids"]["risk"]) + len(
        report["confirmation_probe_ids"]["neutral"]
    )
    assert confirmed["auroc"]["n"] == n_confirm == 63
    assert 0.8 < confirmed["auroc"]["lower95"] <= confirmed["auroc"]["value"] < 1.0
    assert confirmed["firing_rate_neutral"]["value"] == 0.0
    assert confirmed["firing_rate_neutral"]["upper95"] > 0.05  # 0 of 33 is not "never"
    assert confirmed["p_value_adjusted"] < 0.01
    assert confirmed["n_permutations"] >= 1000
    others = [row for row in report["features"] if row["feature"] != PLANTED_FEATURE]
    assert max(row["confirmation"]["auroc"]["value"] for row in others) < 0.8
    assert result.metrics["best_auroc_feature"] == PLANTED_FEATURE
    metric = result.metrics["best_auroc_confirmed"]
    for field in ("value", "lower95", "upper95", "n"):
        assert metric[field] == pytest.approx(confirmed["auroc"][field], rel=1e-5)
    assert result.metrics["held_out"] is True


def test_the_best_feature_is_tested_against_at_least_a_thousand_label_shuffles(planted_report):
    result, report = planted_report
    chance = report["chance"]
    assert chance["n_permutations"] >= 1000
    assert chance["observed"] == 1.0
    assert chance["p_value"] == pytest.approx(1 / (1 + chance["n_permutations"]))
    assert 0.5 < chance["null_95th_percentile"] < 0.9
    assert report["chance_best_auroc"] == [chance["null_95th_percentile"]]
    assert result.metrics["chance_p_value"] == pytest.approx(chance["p_value"], rel=1e-5)


def test_discovery_reads_only_discovery_prompts_and_confirms_on_confirmation_prompts(
    make_context, planted, monkeypatch
):
    reads = []
    real = features.prompt_feature_stats

    def recording(loaded, lens, prompts, feature_indices=None, **kwargs):
        reads.append((list(prompts), feature_indices))
        return real(loaded, lens, prompts, feature_indices, **kwargs)

    monkeypatch.setattr(features, "prompt_feature_stats", recording)
    _, report = discover(make_context, planted, top_n=3, contexts_per_feature=0)
    (ranked, whole_lens), (confirmed, top) = reads
    assert whole_lens is None  # every feature is ranked, on discovery prompts only
    assert {SPLIT_OF_TEXT[t] for t in ranked} == {"discovery"}
    assert {SPLIT_OF_TEXT[t] for t in confirmed} == {"confirmation"}
    assert top == [row["feature"] for row in report["features"]]
    assert {SPLIT_OF[i] for i in report["risk_probe_ids"] + report["neutral_probe_ids"]} == {
        "discovery"
    }
    confirmation_ids = [i for ids in report["confirmation_probe_ids"].values() for i in ids]
    assert {SPLIT_OF[i] for i in confirmation_ids} == {"confirmation"}
    assert not any(
        SPLIT_OF[c["probe_id"]] != "discovery" for r in report["features"] for c in r["contexts"]
    )


def test_the_split_and_its_digest_are_in_the_provenance(planted_report):
    result, report = planted_report
    splits = result.provenance["probe_set"]["splits"]
    for split in ("discovery", "confirmation"):
        expected = load_probe_set("v2", [PLANTED_AXIS, "neutral"], split=split).digest
        assert splits[split]["digest"] == expected
        assert list(splits[split]["split"]) == [split]
    assert splits["discovery"]["digest"] != splits["confirmation"]["digest"]
    assert report["ranked_on"]["split"] == "discovery"
    assert report["confirmed_on"]["split"] == "confirmation"
    assert result.provenance["positions"]["rule"] == "assay-positions-v1"
    assert "attention sink" in result.provenance["positions"]["applied"]


def test_passes_when_enough_features_meet_the_bar_on_held_out_prompts(make_context, planted):
    result, report = discover(
        make_context,
        planted,
        top_n=5,
        thresholds={"min_auroc": 0.8, "min_effect_size": 1.0, "min_features_found": 1},
    )
    assert result.verdict == PASS
    assert result.metrics["n_features_found"] == report["n_features_found"] == 1
    assert report["features"][0]["meets_bar"] is True
    assert report["features"][1]["meets_bar"] is False
    assert [c["bar"] for c in report["features"][0]["bars"]] == [
        "auroc >= 0.8",
        "effect_size >= 1",
    ]
    assert report["judged_on"] == "confirmation"


def test_a_bar_on_the_lower_bound_fails_where_the_value_passes(
    make_context, planted, planted_report
):
    confirmed = planted_report[1]["features"][0]["confirmation"]["auroc"]
    at = round((confirmed["lower95"] + confirmed["value"]) / 2, 4)
    on_value, _ = discover(
        make_context, planted, top_n=3, thresholds={"min_auroc": at, "min_features_found": 1}
    )
    on_bound, report = discover(
        make_context,
        planted,
        top_n=3,
        thresholds={"min_auroc": {"at": at, "on": "lower95"}, "min_features_found": 1},
    )
    assert on_value.verdict == PASS
    assert on_bound.verdict == FAIL
    check = report["features"][0]["bars"][0]
    assert check == {
        "bar": f"auroc.lower95 >= {at:g}",
        "compared": confirmed["lower95"],
        "met": False,
    }


def test_fails_when_fewer_features_than_required_meet_the_bar(make_context, planted):
    result, _ = discover(
        make_context, planted, top_n=5, thresholds={"min_auroc": 0.8, "min_features_found": 2}
    )
    assert result.verdict == FAIL
    assert "1 feature(s) meet the bar" in result.summary


def test_a_bonferroni_p_value_bar_counts_the_features_tested(make_context, planted):
    result, report = discover(
        make_context, planted, top_n=5, thresholds={"max_p_value": 0.01, "min_features_found": 1}
    )
    assert result.verdict == PASS
    for row in report["features"]:
        confirmed = row["confirmation"]
        assert confirmed["p_value_adjusted"] == pytest.approx(
            min(1.0, 5 * confirmed["p_value"]), rel=1e-5
        )


def test_a_lens_that_cannot_see_the_axis_fails(make_context):
    result, report = discover(
        make_context, top_n=5, thresholds={"min_auroc": 0.9, "min_features_found": 1}
    )
    assert result.verdict == FAIL
    assert report["n_features_found"] == 0
    assert result.metrics["best_auroc_confirmed"]["value"] < 0.9


def test_without_thresholds_the_ranking_is_reported_but_inconclusive(make_context, planted):
    result, report = discover(make_context, planted, top_n=3)
    assert result.verdict == INCONCLUSIVE
    assert result.metrics["n_features_found"] is None
    assert len(report["features"]) == 3
    assert report["features"][0]["meets_bar"] is None


def test_evidence_states_its_kind_and_is_well_formed(planted_report):
    result, report = planted_report
    assert result.evidence_kind == report["evidence_kind"] == OBSERVED
    assert "does not show" in report["interpretation"]
    assert len(report["risk_probe_ids"]) == 62
    assert len(report["neutral_probe_ids"]) == 62
    json.dumps(result.metrics, allow_nan=False)
    svg = ElementTree.fromstring(result.artifacts[1].data)
    assert svg.tag.endswith("svg")
    assert result.artifacts[1].media_type == "image/svg+xml"
    assert result.provenance["lens"]["digest"] == "sha256:planted"
    assert result.provenance["lens"]["hook_name"] == "blocks.1.hook_resid_post"
    assert len(result.provenance["probe_set"]["digest"]) == 64


def test_catalogued_features_are_marked(make_context, planted):
    planted = {**planted, "catalog": catalog((PLANTED_FEATURE, "weapon words", "weapons"))}
    _, report = discover(make_context, planted, top_n=2, n_bootstrap=200)
    assert report["features"][0]["catalog_label"] == "weapon words"
    assert report["features"][1]["catalog_label"] is None


def test_same_inputs_and_seed_give_identical_evidence(make_context, planted):
    first, report = discover(make_context, planted, n_prompts=20, seed=1, top_n=4)
    second, _ = discover(make_context, planted, n_prompts=20, seed=1, top_n=4)
    assert first.artifacts[0].data == second.artifacts[0].data
    assert first.artifacts[1].data == second.artifacts[1].data
    assert first.metrics == second.metrics
    assert len(report["risk_probe_ids"]) == len(report["neutral_probe_ids"]) == 20
    assert len(report["confirmation_probe_ids"]["risk"]) == 20
    _, other = discover(make_context, planted, n_prompts=20, seed=2, top_n=4)
    assert other["risk_probe_ids"] != report["risk_probe_ids"]
    assert other["features"][0]["confirmation"] != report["features"][0]["confirmation"]


def test_v1_stays_usable_and_says_nothing_was_held_out(make_context):
    result, report = discover(
        make_context,
        probe_set="v1",
        top_n=3,
        label_shuffles=10,
        thresholds={"min_auroc": 0.99, "min_features_found": 1},
    )
    assert report["held_out"] is False
    assert report["confirmed_on"] is None
    assert report["features"][0]["confirmation"] is None
    assert report["judged_on"].startswith("discovery (in sample")
    assert len(report["risk_probe_ids"]) == 50
    assert "No held-out split" in result.summary
    assert report["deprecated_parameters"] == {
        "label_shuffles": "ignored; the chance level uses n_permutations"
    }
    assert result.verdict == FAIL


@pytest.mark.parametrize(
    "parameters",
    [
        {"axis": "neutral"},
        {"axis": "bio"},
        {"axis": "weapons", "top_n": 0},
        {"axis": "weapons", "probe_set": "v9"},
        {"axis": "weapons", "colour": "red"},
        {"axis": "weapons", "n_permutations": 100},
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
        {"min_auroc": {"at": 0.3, "on": "lower95"}, "min_features_found": 1},
        {"min_auroc": {"at": 0.8, "on": "median"}, "min_features_found": 1},
        {"min_auroc": {"at": 0.8, "side": "lower95"}, "min_features_found": 1},
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
        n_permutations=1000,
        n_bootstrap=500,
        thresholds={"min_auroc": {"at": 0.7, "on": "lower95"}, "min_features_found": 1},
    )
    print("\nSmolLM2 discovery:", result.verdict, result.metrics)
    assert result.verdict in (PASS, FAIL)
    assert len(report["features"]) == 5
    assert report["n_features_scanned"] >= 1024
    assert all(0.0 <= row["auroc"] <= 1.0 for row in report["features"])
    # ranked in sample, the top feature looks better than it does on held-out prompts
    top = report["features"][0]
    assert top["confirmation"]["auroc"]["value"] <= top["auroc"] + 1e-9
    assert report["chance"]["n_permutations"] == 1000
    assert report["features"][0]["contexts"], "the top feature fired on some risk prompt"
    # SmolLM2's template adds a system prompt; it was located and left out of every statistic.
    assert result.provenance["n_prompts_whole_prompt_counted"] == 0
