"""feature_intervention on the tiny model: numbers against hand computations, verdicts, errors."""

import json
import time
from xml.etree import ElementTree

import pytest
import torch

from interp_jobs.checks import feature_intervention as check
from interp_jobs.checks import inputs
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    INTERVENTION,
    PASS,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from interp_jobs.engine.loading import cache
from tests.factories import catalog, demo_lens_dir

SMALL = {
    "axes": ["weapons", "cyber"],
    "n_prompts_per_axis": 4,
    "n_control_prompts": 5,
    "n_generations": 1,
    "max_new_tokens": 4,
}
CATALOG = catalog(
    (3, "tiny weapons feature", "weapons"),
    (10, "tiny cyber feature", "cyber"),
    (11, "another weapons feature", "weapons"),
)


def _run(make_context, parameters, thresholds=None, **fields):
    fields.setdefault("catalog", CATALOG)
    context = make_context(
        check, parameters={**SMALL, **parameters}, thresholds=thresholds, **fields
    )
    return check.run(context)


def _report(result) -> dict:
    return json.loads(next(a.data for a in result.artifacts if a.title == "intervention.json"))


def test_ablation_without_thresholds_is_an_inconclusive_intervention_result(make_context):
    result = _run(make_context, {"features": [{"index": 3}]})
    report = _report(result)
    assert result.verdict == INCONCLUSIVE
    assert result.evidence_kind == report["evidence_kind"] == INTERVENTION
    assert "causal" in report["interpretation"]
    assert "replacement" in report["interpretation"]
    assert "measured causal effect" in result.summary
    assert report["edits"] == [
        {
            "lens": "tiny",
            "index": 3,
            "label": "tiny weapons feature",
            "risk_axis": "weapons",
            "hook": "blocks.1.hook_resid_post",
            "op": "set",
            "value": 0.0,
            "replacement": "zero ablation: set to 0",
        }
    ]
    assert [a.media_type for a in result.artifacts] == ["application/json", "image/svg+xml"]
    assert ElementTree.fromstring(result.artifacts[1].data).tag.endswith("svg")
    assert set(report["groups"]) == {"weapons", "cyber", "neutral", "all_risk"}
    assert len(report["prompts"]) == 4 + 4 + 5
    assert len(report["generations"]) == 3  # one per group: weapons, cyber, controls
    assert result.provenance["probe_set"]["version"] == "v1"
    assert result.provenance["refusal_rule"] == "refusal-patterns-v2"


def test_per_prompt_numbers_equal_a_manual_computation(make_context):
    from interp_jobs.engine.hooks import replace_activation
    from interp_jobs.probes import load_probe_set

    context = make_context(check, parameters={"features": ["unused"]})
    result = _run(
        make_context, {"features": [{"index": 3}], "n_prompts_per_axis": 2, "axes": ["weapons"]}
    )
    row = _report(result)["prompts"][0]
    probe = next(p for p in load_probe_set().prompts if p.id == row["id"])
    loaded = inputs.load_model_for(context)
    lens, _ = inputs.load_lens_for(context)
    ids = result.provenance["refusal_opening_token_ids"]
    enc = loaded.encode(probe.prompt, chat=True)

    def ablate(x):
        return x + (0 - lens.encode(x)[..., 3:4]) * lens.W_dec[3]

    with torch.inference_mode():
        before = torch.softmax(loaded.model(**enc).logits[0, -1].double(), -1)
        with replace_activation(loaded, "blocks.1.hook_resid_post", ablate):
            after = torch.softmax(loaded.model(**enc).logits[0, -1].double(), -1)
    assert row["refusal_prob_before"] == pytest.approx(float(before[ids].sum()), rel=1e-4)
    assert row["refusal_prob_after"] == pytest.approx(float(after[ids].sum()), rel=1e-4)
    assert row["refusal_prob_before"] != row["refusal_prob_after"]
    kl = float((before * (before.log() - after.log())).sum())
    assert row["kl_answer_start"] == pytest.approx(kl, rel=1e-3, abs=1e-6)


def test_a_zero_steer_changes_nothing_anywhere(make_context):
    result = _run(make_context, {"features": [{"index": 3}], "mode": "steer", "coefficient": 0.0})
    report = _report(result)
    assert all(r["kl_answer_start"] == 0 and r["kl_all_positions"] == 0 for r in report["prompts"])
    assert all(r["refusal_prob_change"] == 0 for r in report["prompts"])
    assert all(g["before"] == g["after"] for g in report["generations"])
    assert report["typical_norms"]["tiny"] > 0


def test_ablation_changes_the_controls_so_kl_is_positive(make_context):
    report = _report(_run(make_context, {"features": [{"axis": "weapons"}]}))
    assert report["groups"]["neutral"]["kl_all_positions"] > 0
    assert [e["index"] for e in report["edits"]] == [3, 11]


def test_mean_ablation_sets_each_feature_to_its_neutral_mean(make_context):
    from interp_jobs.engine.analysis.interventions import mean_feature_activations
    from interp_jobs.probes import load_probe_set

    context = make_context(check, parameters={"features": ["x"]})
    loaded = inputs.load_model_for(context)
    lens, _ = inputs.load_lens_for(context)
    neutral = [p.prompt for p in load_probe_set().neutral_prompts]
    means = mean_feature_activations(loaded, lens, neutral)
    report = _report(_run(make_context, {"features": ["tiny cyber feature"], "ablation": "mean"}))
    (edit,) = report["edits"]
    assert edit["value"] == pytest.approx(float(means[10]), rel=1e-5)
    assert "mean activation" in edit["replacement"]


def test_thresholds_decide_the_verdict(make_context):
    features = {"features": [{"index": 3}, {"index": 11}]}
    loose = _run(make_context, features, {"max_control_kl": 100.0, "min_effect": 0.0})
    strict = _run(make_context, features, {"max_control_kl_all_positions": 0.0})
    impossible = _run(make_context, features, {"min_refusal_prob_drop": 1.0})
    assert (loose.verdict, strict.verdict, impossible.verdict) == (PASS, FAIL, FAIL)
    (rule,) = _report(strict)["thresholds"]
    assert rule["passed"] is False
    assert rule["value"] > 0
    assert strict.metrics["control_kl_all_positions"] == pytest.approx(rule["value"])


def test_same_inputs_give_byte_identical_evidence(make_context):
    params = {"features": [{"index": 3}], "mode": "clamp", "value": 2.0}
    first = _run(make_context, params)
    cache.clear_cache()
    second = _run(make_context, params)
    assert first.artifacts == second.artifacts
    assert first.metrics == second.metrics


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"features": [{"index": 64}]}, "out of range"),
        ({"features": [{"lens": "nope", "index": 1}]}, "no lens named 'nope'"),
        ({"features": ["no such label"]}, "no catalog feature is labelled"),
        ({"features": [{"axis": "fraud"}]}, "no catalog feature has risk axis 'fraud'"),
    ],
)
def test_bad_features_are_clear_parameter_errors(make_context, parameters, message):
    with pytest.raises(CheckParameterError, match=message):
        _run(make_context, parameters)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"features": [{"index": 1}], "mode": "clamp"}, "needs the parameter 'value'"),
        ({"features": [{"index": 1}], "mode": "steer", "value": 1.0}, "does not take"),
        ({"features": [{"index": 1}], "mode": "clamp", "value": 1, "ablation": "mean"}, "ablation"),
        ({"features": []}, "features"),
        ({"features": [{"index": -1}]}, "features"),
        ({"features": [{"index": 1}], "axes": ["gardening"]}, "axes"),
        ({"features": [{"index": 1}], "n_generatons": 2}, "n_generatons"),
    ],
)
def test_bad_parameters_are_refused_before_running(parameters, message):
    with pytest.raises(CheckParameterError, match=message):
        check.Parameters.parse(parameters, what="parameters")


def test_contradictory_thresholds_are_refused():
    with pytest.raises(CheckParameterError, match="not both"):
        check.Thresholds.parse(
            {"min_refusal_prob_drop": 0.1, "min_refusal_prob_rise": 0.1}, what="thresholds"
        )


def test_parameters_survive_a_json_round_trip():
    data = {
        "features": [{"lens": "tiny", "index": 2}, "label", {"axis": "cyber"}],
        "mode": "steer",
        "coefficient": 1.5,
    }
    parsed = check.Parameters.parse(data, what="parameters")
    again = check.Parameters.parse(parsed.model_dump(mode="json"), what="parameters")
    assert again == parsed


# ---- SmolLM2 -----------------------------------------------------------------------------------


def _weapons_features(context, k: int = 3) -> list[int]:
    """The k features that best separate weapons requests from neutral prompts (by AUROC), so
    the ablation is of features that plausibly matter rather than of arbitrary ones."""
    from interp_jobs.engine.analysis.features import auroc, prompt_feature_stats, subset
    from interp_jobs.probes import load_probe_set

    loaded = inputs.load_model_for(context)
    lens, _ = inputs.load_lens_for(context)
    probes = load_probe_set()
    risk = [p.prompt for p in subset(probes.for_axis("weapons"), 8, 1)]
    neutral = [p.prompt for p in subset(probes.neutral_prompts, 8, 1)]
    scores = auroc(
        prompt_feature_stats(loaded, lens, risk).max,
        prompt_feature_stats(loaded, lens, neutral).max,
    )
    return torch.argsort(scores, descending=True, stable=True)[:k].tolist()


@pytest.mark.smollm2
def test_ablating_features_on_smollm2(tmp_path, make_context):
    from tests.factories import GGUF, REQUIRED

    if not GGUF.is_file() and not REQUIRED:
        pytest.skip(f"demo model not in the store ({GGUF})")
    lens_dir = demo_lens_dir(tmp_path / "lens")
    fields = {
        "model": ModelRef(
            path=str(GGUF), format="gguf", weights_digest="", file_digests={}, name="smollm2"
        ),
        "lenses": (LensRef(path=str(lens_dir), name=lens_dir.name),),
    }
    chosen = _weapons_features(make_context(check, parameters={"features": ["x"]}, **fields))
    context = make_context(
        check,
        parameters={
            "features": [{"index": i} for i in chosen],
            "axes": ["weapons"],
            "n_prompts_per_axis": 4,
            "n_control_prompts": 4,
            "n_generations": 1,
            "max_new_tokens": 12,
        },
        **fields,
    )
    start = time.perf_counter()
    result = check.run(context)
    elapsed = time.perf_counter() - start
    report = _report(result)
    print(
        f"\nsmollm2 intervention ({lens_dir.name}, features {chosen}, {elapsed:.1f}s): "
        f"{result.summary}"
    )
    print(json.dumps(result.metrics, indent=1))
    for g in report["generations"]:
        print(
            g["id"],
            "|",
            g["before"][:80].replace("\n", " "),
            "||",
            g["after"][:80].replace("\n", " "),
        )
    assert result.evidence_kind == INTERVENTION
    assert report["groups"]["neutral"]["kl_all_positions"] >= 0
    assert 0 <= result.metrics["risk_refusal_prob_before"] <= 1
