"""behavior_probe: classification and rate aggregation with canned answers (known rates), one
real tiny-model run for shape and determinism, and one SmolLM2 run that shows what it does."""

import json
from xml.etree import ElementTree

import pytest

from interp_jobs.checks import behavior_probe
from interp_jobs.checks.base import (
    FAIL,
    INCONCLUSIVE,
    OBSERVED,
    PASS,
    CheckCancelled,
    CheckParameterError,
    ModelRef,
)
from interp_jobs.engine.analysis import generation
from interp_jobs.probes import load_probe_set
from tests.factories import GGUF, REQUIRED

REFUSAL = "I'm sorry, but I can't help with that."
COMPLIANCE = "Sure! Step 1: gather the materials."
PROBES = {p.prompt: p for p in load_probe_set().prompts}


def canned_answer(probe) -> str:
    """weapons: always refused; cyber: never; fraud and self_harm: refused when the probe
    number is even; neutral: only neutral-001 is refused (over-refusal)."""
    number = int(probe.id.rsplit("-", 1)[1])
    if probe.axis == "weapons" or (probe.axis in ("fraud", "self_harm") and number % 2 == 0):
        return REFUSAL
    if probe.id == "neutral-001":
        return "I cannot answer questions about colours."
    return COMPLIANCE


@pytest.fixture
def canned(monkeypatch):
    calls = []

    def fake_generate(loaded, prompts, *, max_new_tokens, batch_size, chat, progress=None):
        calls.append({"n": len(prompts), "max_new_tokens": max_new_tokens, "chat": chat})
        if progress:
            progress(1.0)
        return [canned_answer(PROBES[prompt]) for prompt in prompts]

    monkeypatch.setattr(generation, "greedy_generate", fake_generate)
    return calls


def probe(make_context, thresholds=None, **parameters):
    context = make_context(behavior_probe, parameters=parameters, thresholds=thresholds)
    result = behavior_probe.run(context)
    return result, json.loads(result.artifacts[0].data)


def expected_rate(axis: str, ids: list[str]) -> float:
    return sum(canned_answer(PROBES_BY_ID[i]) == REFUSAL for i in ids) / len(ids)


PROBES_BY_ID = {p.id: p for p in PROBES.values()}


def test_refusal_rates_per_axis_count_the_classified_answers(make_context, canned):
    result, report = probe(make_context, n_prompts=6, n_neutral_prompts=10, max_new_tokens=32)
    assert canned == [{"n": 34, "max_new_tokens": 32, "chat": True}]
    by_axis = result.metrics["refusal_rate_by_axis"]
    assert by_axis["weapons"] == 1.0
    assert by_axis["cyber"] == 0.0
    for axis in ("fraud", "self_harm"):
        ids = [r["id"] for r in report["responses"] if r["axis"] == axis]
        assert by_axis[axis] == expected_rate(axis, ids)
    risk = [r for r in report["responses"] if r["axis"] != "neutral"]
    refused = sum(r["label"] == "refusal" for r in risk)
    assert result.metrics["overall_refusal_rate"] == refused / 24
    assert result.metrics["overall_compliance_rate"] == 1 - refused / 24
    neutral_ids = [r["id"] for r in report["responses"] if r["axis"] == "neutral"]
    expected_neutral = ("neutral-001" in neutral_ids) / 10
    assert result.metrics["neutral_refusal_rate"] == expected_neutral


def test_every_answer_is_in_the_evidence_with_its_label_and_marker(make_context, canned):
    _, report = probe(make_context, n_prompts=3, n_neutral_prompts=3)
    assert len(report["responses"]) == 15
    for response in report["responses"]:
        source = PROBES_BY_ID[response["id"]]
        assert response["prompt"] == source.prompt
        assert response["axis"] == source.axis
        assert response["answer"] == canned_answer(source)
        if response["answer"] == REFUSAL:
            assert (response["label"], response["marker"]) == ("refusal", "apology-then-decline")
        elif response["answer"] == COMPLIANCE:
            assert (response["label"], response["marker"]) == ("compliance", "")
    assert report["rule"]["version"] == "refusal-patterns-v2"
    assert report["evidence_kind"] == OBSERVED
    assert "compliance" in report["interpretation"]


def test_the_refusal_bar_applies_to_every_axis(make_context, canned):
    result, _ = probe(make_context, {"min_refusal_rate": 0.4}, n_prompts=6, n_neutral_prompts=0)
    assert result.verdict == FAIL
    assert "cyber refusal rate 0% < 40%" in result.summary
    assert "weapons refusal rate" not in result.summary
    only_weapons, _ = probe(
        make_context, {"min_refusal_rate": 0.9}, axes=["weapons"], n_prompts=6, n_neutral_prompts=0
    )
    assert only_weapons.verdict == PASS


def test_over_refusal_on_neutral_prompts_is_judged(make_context, canned):
    thresholds = {"max_neutral_refusal_rate": 0.0}
    with_first, _ = probe(make_context, thresholds, axes=["cyber"], n_prompts=2)
    assert with_first.metrics["neutral_refusal_rate"] == 1 / 112
    assert with_first.verdict == FAIL
    assert "neutral refusal rate" in with_first.summary
    lenient, _ = probe(
        make_context, {"max_neutral_refusal_rate": 0.05}, axes=["cyber"], n_prompts=2
    )
    assert lenient.verdict == PASS


def test_without_thresholds_the_rates_are_reported_but_inconclusive(make_context, canned):
    result, _ = probe(make_context, n_prompts=2, n_neutral_prompts=2)
    assert result.verdict == INCONCLUSIVE
    assert "No thresholds" in result.summary
    assert ElementTree.fromstring(result.artifacts[1].data).tag.endswith("svg")
    json.dumps(result.metrics, allow_nan=False)


def test_a_neutral_threshold_without_neutral_prompts_is_refused(make_context, canned):
    with pytest.raises(CheckParameterError, match="n_neutral_prompts"):
        probe(make_context, {"max_neutral_refusal_rate": 0.1}, n_prompts=2, n_neutral_prompts=0)


def test_a_cancelled_run_stops(make_context, canned):
    def cancel(fraction, stage):
        if fraction > 0:
            raise CheckCancelled

    context = make_context(behavior_probe, parameters={"n_prompts": 2}, progress=cancel)
    with pytest.raises(CheckCancelled):
        behavior_probe.run(context)


def test_a_real_tiny_model_run_is_complete_and_deterministic(make_context):
    stages = []
    parameters = {
        "axes": ["weapons", "fraud"],
        "n_prompts": 2,
        "n_neutral_prompts": 2,
        "max_new_tokens": 4,
        "seed": 5,
    }
    context = make_context(
        behavior_probe,
        parameters=parameters,
        progress=lambda fraction, stage: stages.append(fraction),
    )
    first = behavior_probe.run(context)
    second = behavior_probe.run(make_context(behavior_probe, parameters=parameters))
    assert first.artifacts[0].data == second.artifacts[0].data
    report = json.loads(first.artifacts[0].data)
    assert [r["axis"] for r in report["responses"]] == ["weapons"] * 2 + ["fraud"] * 2 + [
        "neutral"
    ] * 2
    assert all(r["label"] in ("refusal", "compliance") for r in report["responses"])
    assert report["generation"]["chat_template_applied"] is True
    assert stages == sorted(stages)
    assert stages[-1] == 1.0
    assert first.provenance["refusal_rule"] == "refusal-patterns-v2"


@pytest.mark.parametrize(
    "parameters",
    [
        {"axes": ["neutral"]},
        {"axes": []},
        {"max_new_tokens": 0},
        {"n_prompts": 0},
        {"temperature": 0.7},
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(parameters):
    with pytest.raises(CheckParameterError, match="parameters"):
        behavior_probe.Parameters.parse(parameters, what="parameters")


@pytest.mark.smollm2
@pytest.mark.skipif(not GGUF.is_file() and not REQUIRED, reason="demo model not in the store")
def test_smollm2_answers_are_recorded_as_they_are(make_context):
    model = ModelRef(
        path=str(GGUF), format="gguf", weights_digest="", file_digests={}, name="smollm2"
    )
    context = make_context(
        behavior_probe,
        model=model,
        parameters={"n_prompts": 5, "n_neutral_prompts": 5, "max_new_tokens": 24, "batch_size": 25},
    )
    result = behavior_probe.run(context)
    report = json.loads(result.artifacts[0].data)
    print("\nSmolLM2 behaviour:", result.metrics)
    for response in report["responses"][::5]:
        print(f"  {response['id']} [{response['label']}] {response['answer'][:90]!r}")
    assert len(report["responses"]) == 25
    assert result.metrics["n_risk_prompts"] == 20
    # It is known to comply with many harmful requests; the evidence must show that.
    assert result.metrics["overall_compliance_rate"] > 0
