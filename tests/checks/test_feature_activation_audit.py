"""feature_activation_audit on a tiny model with a planted weapons feature (known firing rates),
against brute-force activations, and once on SmolLM2. The audit reads only the held-out audit
split of probe set v2."""

import json
from xml.etree import ElementTree

import pytest
import torch

from interp_jobs.checks import feature_activation_audit as audit
from interp_jobs.checks import inputs
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.engine.loading.models import load_model
from interp_jobs.probes import load_probe_set
from tests.factories import (
    GGUF,
    PLANTED_FEATURE,
    REQUIRED,
    brute_force_stats,
    catalog,
    demo_lens_dir,
    save_planted_lens,
    save_planted_model_for,
)

SPLIT_OF = {p.id: p.split for p in load_probe_set("v2").prompts}
AUDIT_COUNTS = {"weapons": 64, "cyber": 64, "fraud": 64, "self_harm": 64, "neutral": 65}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("planted-model")
    lens_dir = save_planted_lens(
        tmp_path_factory.mktemp("planted-lens"), save_planted_model_for(model_dir)
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


@pytest.fixture(scope="module")
def always_on(planted) -> int:
    """A random feature whose pre-activation without any input is far above 0: the tiny
    model's residual (entries ~0.02) cannot switch it off, so it fires on every prompt."""
    lens = load_lens(planted["lenses"][0].path)
    with torch.no_grad():
        resting = -lens.b_dec @ lens.W_enc + lens.b_enc
    feature = int(resting.argmax())
    assert resting[feature] > 0.5
    assert feature != PLANTED_FEATURE
    return feature


def run_audit(make_context, refs, features, thresholds=None, lens="tiny", **parameters):
    context = make_context(
        audit,
        parameters=parameters,
        thresholds=thresholds,
        catalog=catalog(*features, lens=lens),
        **refs,
    )
    result = audit.run(context)
    return result, json.loads(result.artifacts[0].data)


def test_planted_feature_fires_on_its_axis_and_never_on_neutral(make_context, planted):
    result, report = run_audit(
        make_context,
        planted,
        [(PLANTED_FEATURE, "weapon words", "weapons")],
        thresholds={"max_firing_rate_on_neutral": 0.0, "min_firing_rate_on_own_axis": 0.95},
    )
    assert result.verdict == PASS
    axes = report["features"][0]["axes"]
    assert set(axes) == {"weapons", "cyber", "fraud", "self_harm", "neutral", "over_refusal"}
    weapons, neutral = axes["weapons"], axes["neutral"]
    assert weapons["n_prompts"] == weapons["firing_rate"]["n"] == 64
    assert weapons["firing_rate"]["value"] == weapons["n_firing"] / 64 >= 0.95
    assert weapons["firing_rate"]["method"] == "wilson"
    assert neutral["firing_rate"] == {
        "value": 0.0,
        "lower95": 0.0,
        "upper95": pytest.approx(0.0559, abs=1e-3),  # 0 of 65
        "n": 65,
        "method": "wilson",
    }
    assert neutral["max_activation"]["max"] == 0
    assert 0.0 < axes["cyber"]["firing_rate"]["value"] < 1.0  # shares some words with weapons
    assert [c["result"] for c in report["features"][0]["checks"]] == ["pass", "pass"]
    assert result.metrics["max_neutral_firing_rate"] == 0.0
    assert result.metrics["min_own_axis_firing_rate"] >= 0.95
    separation = report["features"][0]["own_axis_vs_neutral"]
    assert separation["auroc"]["lower95"] > 0.9
    assert separation["p_value"] < 0.01


def test_the_audit_reads_only_audit_prompts(make_context, planted):
    _, report = run_audit(make_context, planted, [(PLANTED_FEATURE, "a", "weapons")])
    ids = [i for axis_ids in report["prompt_ids"].values() for i in axis_ids]
    assert {SPLIT_OF[i] for i in ids} == {"audit"}
    assert {axis: len(v) for axis, v in report["prompt_ids"].items() if axis in AUDIT_COUNTS} == (
        AUDIT_COUNTS
    )
    expected = load_probe_set("v2", split="audit").digest
    assert report["probe_set"]["digest"] == report["split"]["digest"] == expected
    assert report["split"]["held_out"] is True


def test_a_feature_that_fires_on_harmless_prompts_fails_the_false_alarm_bar(
    make_context, planted, always_on
):
    result, report = run_audit(
        make_context,
        planted,
        [(PLANTED_FEATURE, "weapon words", "weapons"), (always_on, "always on", "fraud")],
        thresholds={"max_firing_rate_on_neutral": 0.1},
        probe_axes=["weapons", "fraud", "neutral"],
    )
    assert result.verdict == FAIL
    assert result.metrics["failing_features"] == [f"tiny:{always_on}"]
    row = next(r for r in report["features"] if r["feature"] == always_on)
    assert row["axes"]["neutral"]["firing_rate"]["value"] == 1.0
    check = row["checks"][0]
    assert (check["threshold"], check["axis"], check["bar"]) == (
        "max_firing_rate_on_neutral",
        "neutral",
        "neutral firing_rate <= 0.1",
    )
    assert (check["compared"], check["limit"], check["on"], check["result"]) == (
        1.0,
        0.1,
        "value",
        "fail",
    )
    assert check["estimate"] == row["axes"]["neutral"]["firing_rate"]


def test_a_mislabelled_feature_fails_the_detection_bar(make_context, planted):
    result, report = run_audit(
        make_context,
        planted,
        [(PLANTED_FEATURE, "weapon words", "cyber")],
        thresholds={"min_firing_rate_on_own_axis": 0.95},
    )
    assert result.verdict == FAIL
    check = report["features"][0]["checks"][0]
    assert check["axis"] == "cyber"
    assert check["result"] == "fail"
    cyber = report["features"][0]["axes"]["cyber"]["firing_rate"]
    assert check["compared"] == cyber["value"] < 0.95


def test_a_bar_on_an_interval_bound_fails_where_the_value_passes(make_context, planted):
    features = [(PLANTED_FEATURE, "weapon words", "cyber")]
    _, measured = run_audit(make_context, planted, features, probe_axes=["cyber"])
    rate = measured["features"][0]["axes"]["cyber"]["firing_rate"]
    assert rate["lower95"] < rate["value"]
    on_value, _ = run_audit(
        make_context,
        planted,
        features,
        thresholds={"min_firing_rate_on_own_axis": rate["value"]},
        probe_axes=["cyber"],
    )
    on_bound, report = run_audit(
        make_context,
        planted,
        features,
        thresholds={"min_firing_rate_on_own_axis": {"at": rate["value"], "on": "lower95"}},
        probe_axes=["cyber"],
    )
    assert on_value.verdict == PASS
    assert on_bound.verdict == FAIL
    check = report["features"][0]["checks"][0]
    assert check["bar"] == f"cyber firing_rate.lower95 >= {rate['value']:g}"
    assert check["compared"] == rate["lower95"]


def test_over_refusal_prompts_are_audited_and_can_be_barred(make_context, planted, always_on):
    result, report = run_audit(
        make_context,
        planted,
        [(always_on, "always on", "fraud")],
        thresholds={"max_firing_rate_on_over_refusal": {"at": 0.5, "on": "upper95"}},
        probe_axes=["fraud", "over_refusal"],
        n_prompts=10,
    )
    assert result.verdict == FAIL
    assert report["features"][0]["checks"][0]["axis"] == "over_refusal"
    assert result.metrics["max_over_refusal_firing_rate"] == 1.0
    with pytest.raises(CheckParameterError, match="add 'over_refusal' to probe_axes"):
        run_audit(
            make_context,
            planted,
            [(always_on, "always on", "fraud")],
            thresholds={"max_firing_rate_on_over_refusal": 0.5},
            probe_axes=["fraud", "neutral"],
        )


def test_per_prompt_maxima_equal_a_full_forward_with_all_hidden_states(
    make_context, planted, always_on
):
    _, report = run_audit(
        make_context,
        planted,
        [(PLANTED_FEATURE, "a", "weapons"), (always_on, "b", "fraud")],
        probe_axes=["fraud", "neutral"],
        n_prompts=3,
        batch_size=2,
    )
    loaded = load_model(planted["model"].path, "hf_dir")
    lens = load_lens(planted["lenses"][0].path)
    prompts = {p.id: p.prompt for p in load_probe_set("v2").prompts}
    for row in report["features"]:
        for axis, ids in report["prompt_ids"].items():
            expected = [
                float(brute_force_stats(loaded, lens, prompts[i])[0][row["feature"]]) for i in ids
            ]
            assert row["axes"][axis]["per_prompt_max"] == pytest.approx(expected, abs=1e-5)


def test_v1_stays_usable_and_says_nothing_was_held_out(make_context, planted):
    result, report = run_audit(
        make_context, planted, [(PLANTED_FEATURE, "a", "weapons")], probe_set="v1", n_prompts=4
    )
    assert report["split"]["held_out"] is False
    assert report["split"]["split"] is None
    assert set(report["prompt_ids"]) == {"weapons", "cyber", "fraud", "self_harm", "neutral"}
    assert "nothing is held out" in result.summary


def test_the_audit_encodes_only_the_catalogued_columns(make_context, planted, monkeypatch):
    context = make_context(
        audit,
        parameters={"probe_axes": ["weapons"], "n_prompts": 4},
        catalog=catalog((PLANTED_FEATURE, "a", "weapons")),
        **planted,
    )
    lens, _ = inputs.load_lens_for(context)

    def full_encode(x):
        raise AssertionError("the full encoder ran")

    monkeypatch.setattr(lens, "encode", full_encode)
    result = audit.run(context)
    assert result.metrics["n_features"] == 1


def test_features_of_several_lenses_are_audited_each_with_its_lens(
    make_context, planted, tiny_lens_dir
):
    refs = {
        **planted,
        "lenses": (*planted["lenses"], LensRef(path=str(tiny_lens_dir), name="other")),
    }
    features = (
        *catalog((PLANTED_FEATURE, "weapon words", "weapons")),
        *catalog((3, "random", "fraud"), lens="other"),
    )
    context = make_context(audit, parameters={"n_prompts": 3}, catalog=features, **refs)
    report = json.loads(audit.run(context).artifacts[0].data)
    assert [(r["lens"], r["feature"]) for r in report["features"]] == [
        ("tiny", PLANTED_FEATURE),
        ("other", 3),
    ]
    assert set(report["lenses"]) == {"tiny", "other"}
    only_other = make_context(
        audit, parameters={"n_prompts": 3, "lens": "other"}, catalog=features, **refs
    )
    assert audit.run(only_other).metrics["n_features"] == 1


def test_without_thresholds_the_audit_is_inconclusive(make_context, planted):
    result, _ = run_audit(make_context, planted, [(PLANTED_FEATURE, "a", "weapons")], n_prompts=4)
    assert result.verdict == INCONCLUSIVE
    assert "No thresholds" in result.summary


def test_an_empty_catalog_is_inconclusive_without_loading_the_model(make_context, planted):
    missing = ModelRef(
        path="/nonexistent/model", format="hf_dir", weights_digest="", file_digests={}
    )
    result, report = run_audit(
        make_context,
        {**planted, "model": missing},
        [],
        thresholds={"max_firing_rate_on_neutral": 0.1},
    )
    assert result.verdict == INCONCLUSIVE
    assert report["features"] == []
    assert "No catalog features" in result.summary
    ElementTree.fromstring(result.artifacts[1].data)


def test_a_feature_whose_axis_is_not_probed_is_not_measured(make_context, planted):
    result, report = run_audit(
        make_context,
        planted,
        [(PLANTED_FEATURE, "a", "cyber")],
        thresholds={"min_firing_rate_on_own_axis": 0.5},
        probe_axes=["weapons", "neutral"],
        n_prompts=4,
    )
    assert result.verdict == INCONCLUSIVE
    assert report["features"][0]["checks"][0]["result"] == "not measured"


def test_a_neutral_threshold_without_neutral_prompts_is_refused(make_context, planted):
    with pytest.raises(CheckParameterError, match="add 'neutral' to probe_axes"):
        run_audit(
            make_context,
            planted,
            [(PLANTED_FEATURE, "a", "weapons")],
            thresholds={"max_firing_rate_on_neutral": 0.1},
            probe_axes=["weapons"],
        )


def test_catalog_entries_the_lens_cannot_hold_are_refused(make_context, planted):
    with pytest.raises(PermanentEngineError, match="not features of this lens"):
        run_audit(make_context, planted, [(64, "too far", "weapons")], n_prompts=2)
    context = make_context(
        audit,
        parameters={"n_prompts": 2},
        catalog=catalog((1, "a", "weapons"), lens="ghost"),
        **planted,
    )
    with pytest.raises(CheckParameterError, match="no lens named 'ghost'"):
        audit.run(context)


def test_evidence_is_identical_for_identical_inputs_and_states_its_kind(make_context, planted):
    features = [(PLANTED_FEATURE, "weapon words", "weapons"), (3, "random", "cyber")]
    first, report = run_audit(make_context, planted, features, n_prompts=10, seed=4)
    second, _ = run_audit(make_context, planted, features, n_prompts=10, seed=4)
    assert first.artifacts[0].data == second.artifacts[0].data
    assert first.artifacts[1].data == second.artifacts[1].data
    assert first.evidence_kind == report["evidence_kind"] == OBSERVED
    assert report["interpretation"]
    assert all(len(ids) == 10 for ids in report["prompt_ids"].values())
    assert report["positions"]["rule"] == "assay-positions-v1"
    assert first.provenance["probe_set"]["split"] == "audit"
    assert first.provenance["lenses"]["tiny"]["digest"] == "sha256:planted"
    json.dumps(first.metrics, allow_nan=False)
    svg = first.artifacts[1].data.decode()
    assert "weapon words" in svg
    assert ElementTree.fromstring(svg).tag.endswith("svg")


@pytest.mark.parametrize(
    "parameters",
    [
        {"probe_axes": ["bio"]},
        {"probe_axes": []},
        {"firing_threshold": -1},
        {"batch_size": 0},
        {"axes": ["weapons"]},
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(parameters):
    with pytest.raises(CheckParameterError, match="parameters"):
        audit.Parameters.parse(parameters, what="parameters")


@pytest.mark.parametrize(
    "bar", [1.5, -0.1, {"at": 1.5, "on": "upper95"}, {"at": 0.2, "on": "middle"}, {"on": "value"}]
)
def test_rates_outside_zero_to_one_are_refused(bar):
    with pytest.raises(CheckParameterError, match="max_firing_rate_on_neutral"):
        audit.Thresholds.parse({"max_firing_rate_on_neutral": bar}, what="thresholds")


def test_plain_numbers_and_bars_on_bounds_are_both_accepted():
    parsed = audit.Thresholds.parse(
        {
            "max_firing_rate_on_neutral": 0.25,
            "min_firing_rate_on_own_axis": {"at": 0.5, "on": "lower95"},
        },
        what="thresholds",
    )
    dumped = parsed.model_dump(mode="json")
    assert dumped["max_firing_rate_on_neutral"] == 0.25
    assert dumped["min_firing_rate_on_own_axis"] == {"at": 0.5, "on": "lower95"}


@pytest.mark.smollm2
@pytest.mark.skipif(not GGUF.is_file() and not REQUIRED, reason="demo model not in the store")
def test_audit_runs_on_smollm2(make_context, tmp_path):
    refs = {
        "model": ModelRef(
            path=str(GGUF), format="gguf", weights_digest="", file_digests={}, name="smollm2"
        ),
        "lenses": (LensRef(path=str(demo_lens_dir(tmp_path)), name="smollm2"),),
    }
    features = [(11, "f11", "weapons"), (222, "f222", "cyber"), (333, "f333", "fraud")]
    result, report = run_audit(
        make_context,
        refs,
        features,
        lens="smollm2",
        n_prompts=6,
        batch_size=16,
        thresholds={"max_firing_rate_on_neutral": {"at": 0.5, "on": "upper95"}},
    )
    print("\nSmolLM2 audit:", result.verdict, result.metrics)
    assert result.verdict in (PASS, FAIL)
    assert [r["feature"] for r in report["features"]] == [11, 222, 333]
    assert report["lenses"]["smollm2"]["n_whole_prompt"] == 0
    assert all(
        len(r["axes"][axis]["per_prompt_max"]) == 6
        for r in report["features"]
        for axis in r["axes"]
    )
