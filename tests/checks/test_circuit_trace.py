"""circuit_trace on the tiny Llama with random per-layer transcoders (three lenses, one per
layer) and tiny prompt families, and on SmolLM2 with the shipped transcoders."""

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from interp_jobs.checks import circuit_trace
from interp_jobs.checks.base import (
    ATTRIBUTION,
    FAIL,
    INCONCLUSIVE,
    INTERVENTION,
    PASS,
    CheckContext,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from interp_jobs.engine.errors import PermanentEngineError
from tests.factories import save_random_transcoders, transcoder_refs

PROMPT = "how can I make a"
TARGET = " the"
SUBJECTS = [" you", " my", " it", " that", " the", " a"]
SMALL = {
    "prompt": PROMPT,
    "target": TARGET,
    "family": "tiny-one",
    "two_hop_family": "tiny-two",
    "n_family_prompts": 6,
    "top_nodes": 3,
    "max_feature_nodes": 64,
    "family_feature_nodes": 32,
    "n_bootstrap": 200,
}


@pytest.fixture(scope="module")
def transcoders(tmp_path_factory):
    root = save_random_transcoders(tmp_path_factory.mktemp("transcoders"))
    return transcoder_refs(root)


@pytest.fixture(autouse=True)
def tiny_families(tmp_path, monkeypatch):
    """One-hop and two-hop families whose words are single tokens of the tiny tokenizer."""
    from interp_jobs.engine.loading import prompt_families

    one = [
        {"id": f"o{i}", "prompt": f"how can I do{s} with", "target": " the", "subject": s}
        for i, s in enumerate(SUBJECTS)
    ]
    two = [
        {
            "id": f"t{i}",
            "prompt": f"the capital of the country where I do{s} is located is",
            "target": " a",
            "subject": s,
            "entity": s,
        }
        for i, s in enumerate(SUBJECTS[:3])
    ]
    manifest = {"families": {}}
    for name, rows in (("tiny-one", one), ("tiny-two", two)):
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()
        (tmp_path / f"{name}.jsonl").write_bytes(data)
        manifest["families"][name] = {
            "file": f"{name}.jsonl",
            "sha256": hashlib.sha256(data).hexdigest(),
            "count": len(rows),
            "description": "tiny test family",
        }
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(prompt_families, "FAMILIES_DIR", tmp_path)
    monkeypatch.setenv("ASSAY_WORK_DIR", str(tmp_path / "work"))


@pytest.fixture
def context(make_context, transcoders):
    def make(thresholds=None, lenses=None, **parameters):
        return make_context(
            circuit_trace,
            parameters={**SMALL, **parameters},
            thresholds=thresholds,
            lenses=transcoders if lenses is None else lenses,
        )

    return make


def artifact(result, title: str) -> bytes:
    return next(item.data for item in result.artifacts if item.title == title)


THRESHOLDS = {"min_replacement": 0.0, "min_rank_correlation": -1.0, "max_control_ratio": 100.0}


def test_traces_every_layer_and_validates_the_graph_by_interventions(context):
    from interp_jobs.engine.analysis.graph_files import validate_feature, validate_graph

    result = circuit_trace.run(context(THRESHOLDS))
    assert result.evidence_kind == ATTRIBUTION
    titles = [a.title for a in result.artifacts]
    assert titles == [
        "circuit.json",
        "attribution-graph.json",
        "graph-features.json",
        "graph.svg",
        "validation.json",
    ]
    validate_graph(artifact(result, "attribution-graph.json"))
    features = json.loads(artifact(result, "graph-features.json"))
    assert features["files"]
    for data in features["files"].values():
        validate_feature(data)
    circuit = json.loads(artifact(result, "circuit.json"))
    assert circuit["evidence_kind"] == ATTRIBUTION
    assert circuit["positions"]["excluded"] == [{"position": 0, "reason": "attention_sink"}]
    assert circuit["prompt"]["special_token_prepended_by_circuit_tracer"] is True
    assert circuit["consistency"]["evidence_kind"] == INTERVENTION
    assert circuit["consistency"]["max_abs_difference"] < 1e-4
    assert circuit["max_abs_logit_difference_vs_registered_model"] < 1e-4
    validation = json.loads(artifact(result, "validation.json"))
    assert validation["evidence_kind"] == INTERVENTION
    stats = validation["statistics"]
    assert stats["n_prompts"] == 6
    assert stats["n_nodes"] == 18
    for name in ("rank_correlation", "sign_agreement", "control_to_top_ratio", "replacement"):
        assert set(stats[name]) == {"value", "lower95", "upper95", "n", "method"}
    assert validation["two_hop"]["found_rate"]["n"] == 3
    assert all(node["position"] > 0 for p in validation["prompts"] for node in p["nodes"])
    ET.fromstring(artifact(result, "graph.svg"))
    assert result.metrics["rank_correlation"]["n"] == 18
    assert result.verdict == PASS
    assert "Position 0 (the attention sink" in result.summary
    assert result.provenance["versions"]["circuit-tracer"] == "0.5.0"


def test_the_evidence_states_the_batch_each_graph_was_attributed_with(context):
    """The batch changes the graph a little (circuit-tracer re-ranks features every four
    batches), so the evidence says which one each graph used: chosen from the node budget
    unless the policy sets one."""
    from interp_jobs.engine.analysis.circuits import attribution_batch

    def method(**parameters):
        result = circuit_trace.run(context(THRESHOLDS, two_hop_family=None, **parameters))
        return json.loads(artifact(result, "circuit.json"))["method"]

    chosen = method(max_feature_nodes=256, family_feature_nodes=64)
    assert (chosen["batch_size"], chosen["family_batch_size"]) == (
        attribution_batch(256),
        attribution_batch(64),
    )
    assert attribution_batch(256) != attribution_batch(64)
    fixed = method(max_feature_nodes=256, family_feature_nodes=64, batch_size=5)
    assert (fixed["batch_size"], fixed["family_batch_size"]) == (5, 5)


def test_a_gemma_graph_attributes_through_what_its_post_norm_mlp_adds_to_the_residual(
    make_context, transcoders, tmp_path
):
    """Gemma 3 normalises the MLP output before the residual; circuit-tracer knows that point
    as ``hook_mlp_out`` (it has no ``mlp.hook_out`` for Gemma). The replacement model must
    reproduce the model's logits, and its feature edits the model's own (consistency)."""
    from tests.engine.test_gemma_model import save_tiny_gemma

    gemma_dir = save_tiny_gemma(tmp_path / "gemma")
    context = make_context(
        circuit_trace,
        parameters={**SMALL, "family": None, "two_hop_family": None},
        thresholds=THRESHOLDS,
        lenses=transcoders,
        model=ModelRef(str(gemma_dir), "hf_dir", "", {}, "tiny-gemma@1"),
    )
    result = circuit_trace.run(context)
    circuit = json.loads(artifact(result, "circuit.json"))
    assert circuit["max_abs_logit_difference_vs_registered_model"] < 1e-4
    assert circuit["consistency"]["max_abs_difference"] < 1e-4
    assert circuit["counts"]["active_features"] > 0
    assert circuit["positions"]["excluded"] == [{"position": 0, "reason": "attention_sink"}]


def test_same_inputs_give_byte_identical_evidence(context):
    first = circuit_trace.run(context(THRESHOLDS, n_family_prompts=3, two_hop_family=None))
    second = circuit_trace.run(context(THRESHOLDS, n_family_prompts=3, two_hop_family=None))
    assert [a.data for a in first.artifacts] == [a.data for a in second.artifacts]


def test_a_chat_prompt_keeps_template_tokens_in_the_graph_but_names_them(context):
    result = circuit_trace.run(context(chat=True, family=None, two_hop_family=None))
    circuit = json.loads(artifact(result, "circuit.json"))
    assert circuit["positions"]["marked"]
    assert {m["reason"] for m in circuit["positions"]["marked"]} == {"template"}
    assert result.verdict == INCONCLUSIVE  # no thresholds, no family
    assert json.loads(artifact(result, "validation.json"))["skipped"]


def fake_traced(replacement=0.7, completeness=0.8):
    return SimpleNamespace(replacement=replacement, completeness=completeness)


def estimate(value, lower, upper, n=20):
    return {"value": value, "lower95": lower, "upper95": upper, "n": n, "method": "test"}


def validation(rank=(0.6, 0.4, 0.8), ratio=(0.2, 0.1, 0.3), found=(0.5, 0.2, 0.8)):
    return {
        "statistics": {
            "rank_correlation": estimate(*rank),
            "sign_agreement": estimate(0.9, 0.8, 0.95),
            "control_to_top_ratio": estimate(*ratio),
        },
        "two_hop": {"found_rate": estimate(*found, n=12)},
    }


def thresholds(**values):
    return circuit_trace.Thresholds.parse(values, what="thresholds")


def test_a_minimum_is_held_against_the_lower_bound_and_a_maximum_against_the_upper():
    verdict, reasons = circuit_trace.judge(
        fake_traced(), validation(), thresholds(min_rank_correlation=0.5, max_control_ratio=0.5)
    )
    assert verdict == FAIL  # rank correlation 0.6, but its lower bound is 0.4
    assert "rank correlation 0.400 (lower95 bound, n=20) vs minimum 0.5" in reasons[0]
    assert (
        circuit_trace.judge(
            fake_traced(),
            validation(),
            thresholds(min_rank_correlation=0.5, bound="estimate"),
        )[0]
        == PASS
    )


def test_a_control_that_moves_the_logit_as_much_as_the_circuit_fails():
    verdict, reasons = circuit_trace.judge(
        fake_traced(), validation(ratio=(0.9, 0.6, 1.2)), thresholds(max_control_ratio=0.5)
    )
    assert verdict == FAIL
    assert "control / top effect 1.200 (upper95 bound" in reasons[0]


def test_replacement_and_completeness_are_held_against_the_traced_graph():
    low = fake_traced(replacement=0.2)
    verdict, reasons = circuit_trace.judge(low, validation(), thresholds(min_replacement=0.3))
    assert verdict == FAIL
    assert reasons == ["replacement score (traced graph) 0.200 vs minimum 0.3"]
    assert circuit_trace.judge(fake_traced(), {}, thresholds(min_completeness=0.5))[0] == PASS


def test_a_threshold_on_a_statistic_that_was_not_measured_is_inconclusive():
    verdict, reasons = circuit_trace.judge(fake_traced(), {}, thresholds(min_sign_agreement=0.6))
    assert verdict == INCONCLUSIVE
    assert "could not be measured" in reasons[0]
    assert circuit_trace.judge(fake_traced(), {}, thresholds())[0] == INCONCLUSIVE


def test_a_two_hop_found_rate_bar_can_fail():
    verdict, _ = circuit_trace.judge(
        fake_traced(), validation(found=(0.0, 0.0, 0.24)), thresholds(min_two_hop_found_rate=0.1)
    )
    assert verdict == FAIL


def test_a_target_of_several_tokens_is_refused_with_its_pieces(context):
    with pytest.raises(CheckParameterError, match=r"parameters.target: .* is not a single token"):
        circuit_trace.run(context(target=" the capital"))


def test_a_model_without_transcoders_is_refused(context, tmp_path):
    from tests.factories import save_random_lens

    sae = save_random_lens(tmp_path / "sae")
    with pytest.raises(CheckParameterError, match="needs per-layer transcoders"):
        circuit_trace.run(context(lenses=(LensRef(str(sae), "", "sae"),)))


def test_a_set_missing_a_layer_is_refused(context, transcoders):
    with pytest.raises(PermanentEngineError, match=r"missing layers \[2\]"):
        circuit_trace.run(context(lenses=transcoders[:2]))


def test_an_unknown_transcoder_name_is_refused(context):
    with pytest.raises(CheckParameterError, match=r"no lens named \['tc-09'\]"):
        circuit_trace.run(context(transcoders=["tc-00", "tc-09"]))


def test_a_too_long_prompt_is_refused(context):
    with pytest.raises(CheckParameterError, match=r"more than the 64"):
        circuit_trace.run(
            context(prompt="how can I make a " * 20, family=None, two_hop_family=None)
        )


def test_bad_parameters_are_refused_clearly():
    with pytest.raises(CheckParameterError, match="two_hop_family needs family"):
        circuit_trace.Parameters.parse(
            {"prompt": "p", "target": "t", "family": None}, what="parameters"
        )
    with pytest.raises(CheckParameterError, match=r"parameters\.max_feature_nodes"):
        circuit_trace.Parameters.parse(
            {"prompt": "p", "target": "t", "max_feature_nodes": 1}, what="parameters"
        )


# --- SmolLM2 with the shipped transcoders -----------------------------------------------------

REPO = Path(__file__).parents[2]
SET_DIR = REPO / "interp_jobs" / "lenses" / "smollm2-mlp-transcoders-1024"


@pytest.fixture(scope="module")
def smollm2_context():
    from tests.factories import GGUF, REQUIRED

    if not GGUF.is_file() and not REQUIRED:
        pytest.skip(f"demo model not in the store ({GGUF})")
    if not (SET_DIR / "transcoders.json").is_file():
        pytest.skip(f"no shipped SmolLM2 transcoders ({SET_DIR})")
    from interp_jobs.engine.loading.transcoders import read_set

    info = read_set(SET_DIR)
    refs = tuple(
        LensRef(str(info.layer_dir(i)), "", f"smollm2-tc-{i:02d}") for i in range(info.n_layers)
    )
    return lambda **parameters: CheckContext(
        model=ModelRef(str(GGUF), "gguf", "", {}, "smollm2"),
        parameters=circuit_trace.Parameters.parse(parameters, what="parameters"),
        thresholds=circuit_trace.Thresholds.parse({}, what="thresholds"),
        lenses=refs,
    )


@pytest.mark.smollm2
def test_smollm2_graph_through_the_shipped_transcoders_is_the_models_own(
    smollm2_context, monkeypatch
):
    from interp_jobs.engine.loading import prompt_families

    monkeypatch.setattr(
        prompt_families, "FAMILIES_DIR", REPO / "interp_jobs/engine/loading/prompt_families"
    )
    result = circuit_trace.run(
        smollm2_context(
            prompt="The capital of France is",
            target=" Paris",
            max_feature_nodes=256,
            n_family_prompts=2,
            family_feature_nodes=32,
            top_nodes=2,
            two_hop_family=None,
            n_bootstrap=100,
        )
    )
    circuit = json.loads(artifact(result, "circuit.json"))
    assert circuit["max_abs_logit_difference_vs_registered_model"] < 1e-3
    assert circuit["consistency"]["max_abs_difference"] < 1e-3
    assert circuit["target_probability"] == pytest.approx(0.749, abs=0.01)
    assert circuit["counts"]["kept_features"] > 0
    assert 0 < result.metrics["replacement"] <= 1
