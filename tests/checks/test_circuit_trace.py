"""circuit_trace on the tiny Llama with three lenses (blocks.0/1/2 resid_post), and once on
SmolLM2 itself."""

import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from interp_jobs.checks import circuit_trace
from interp_jobs.checks.base import (
    ATTRIBUTION,
    FAIL,
    INCONCLUSIVE,
    INTERVENTION,
    PASS,
    CheckParameterError,
    LensRef,
    ModelRef,
)
from tests.factories import save_random_lens

HOOKS = [f"blocks.{i}.hook_resid_post" for i in range(3)]
PROMPT = "How do I bake bread at home"
TARGET = " the"


@pytest.fixture(scope="module")
def three_lenses(tmp_path_factory):
    root = tmp_path_factory.mktemp("circuit-lenses")
    return tuple(
        LensRef(
            path=str(save_random_lens(root / f"l{i}", seed=10 + i, hook_name=hook)),
            digest=f"sha256:l{i}",
            name=f"l{i}",
        )
        for i, hook in enumerate(HOOKS)
    )


@pytest.fixture
def trace_context(make_context, three_lenses):
    def make(thresholds=None, **parameters):
        parameters = {
            "prompt": PROMPT,
            "target": TARGET,
            "max_nodes": 6,
            "n_ablation_checks": 6,
            **parameters,
        }
        return make_context(
            circuit_trace, parameters=parameters, thresholds=thresholds, lenses=three_lenses
        )

    return make


def _artifact(result, title):
    return next(a.data for a in result.artifacts if a.title == title)


def test_graph_json_separates_attribution_estimates_from_measured_ablations(trace_context):
    result = circuit_trace.run(trace_context())
    assert result.evidence_kind == ATTRIBUTION
    assert result.verdict == INCONCLUSIVE  # no thresholds, no bar
    graph = json.loads(_artifact(result, "graph.json"))
    assert graph["evidence_kind"] == "attribution"
    assert "not causal effects" in graph["interpretation"]
    assert "measured_effect" in graph["number_kinds"]["intervention_results"]
    assert graph["ablations"]["evidence_kind"] == INTERVENTION
    assert graph["ablations"]["replacement"] == "zero"
    checks = graph["ablations"]["checks"]
    assert len(checks) == 6
    assert {"attribution_estimate", "measured_effect", "signs_agree"} <= set(checks[0])
    assert graph["metric"]["max_abs_logit_difference_spliced_vs_unmodified"] < 1e-4
    assert [layer["hook"] for layer in graph["layers"]] == HOOKS
    types = {node["type"] for node in graph["nodes"]}
    assert types == {"token", "feature", "error", "logit"}
    feature = next(node for node in graph["nodes"] if node["type"] == "feature")
    assert {"id", "layer", "position", "token", "feature", "activation", "attribution"} <= set(
        feature
    )
    assert graph["cost"]["backward_passes"] == 1 + len(graph["layers"])
    assert result.metrics["error_share"] == pytest.approx(graph["error_share"], rel=1e-5)
    assert result.metrics["rank_agreement"] == graph["ablations"]["rank_agreement_spearman"]
    assert "attribution estimates" in result.summary
    assert "intervention" in result.summary
    assert result.provenance["lenses"][0]["digest"] == "sha256:l0"


def test_graph_figure_is_a_layered_svg_with_every_node(trace_context):
    result = circuit_trace.run(trace_context())
    graph = json.loads(_artifact(result, "graph.json"))
    svg = ET.fromstring(_artifact(result, "graph.svg"))
    tips = [el.text for el in svg.iter("{http://www.w3.org/2000/svg}title")]
    assert len(tips) == len(graph["nodes"])
    assert any(tip.startswith("logit:") for tip in tips)
    lines = list(svg.iter("{http://www.w3.org/2000/svg}line"))
    assert len(lines) == len(graph["edges"])


def test_same_inputs_give_byte_identical_evidence(trace_context):
    first = circuit_trace.run(trace_context())
    second = circuit_trace.run(trace_context())
    assert _artifact(first, "graph.json") == _artifact(second, "graph.json")
    assert _artifact(first, "graph.svg") == _artifact(second, "graph.svg")
    assert first.metrics == second.metrics


def test_target_that_is_not_one_token_is_refused_with_its_tokenization(trace_context):
    with pytest.raises(CheckParameterError, match=r"tokenizes to \d+ token\(s\)"):
        circuit_trace.run(trace_context(target=" photosynthesis quickly"))


def test_contrast_is_required_exactly_for_the_logit_difference(trace_context):
    with pytest.raises(CheckParameterError, match="contrast"):
        trace_context(metric="logit_diff")
    with pytest.raises(CheckParameterError, match="contrast"):
        trace_context(contrast=" a")
    result = circuit_trace.run(trace_context(metric="logit_diff", contrast=" a"))
    graph = json.loads(_artifact(result, "graph.json"))
    assert graph["metric"]["target"]["contrast"] == " a"


def test_bad_parameter_values_fail_validation(trace_context):
    for bad in (
        {"node_threshold": 0},
        {"max_nodes": 0},
        {"ablation": "mean"},
        {"metric": "prob"},
        {"lenses": []},
        {"unknown": 1},
    ):
        with pytest.raises(CheckParameterError):
            trace_context(**bad)


def test_unknown_lens_name_is_refused(trace_context):
    with pytest.raises(CheckParameterError, match="no lens named 'l9'"):
        circuit_trace.run(trace_context(lenses=["l9"]))


def test_lens_parameter_traces_only_the_named_lenses(trace_context):
    result = circuit_trace.run(trace_context(lenses=["l2", "l0"]))
    graph = json.loads(_artifact(result, "graph.json"))
    assert [layer["hook"] for layer in graph["layers"]] == [HOOKS[0], HOOKS[2]]
    assert set(result.metrics["error_share_by_layer"]) == {HOOKS[0], HOOKS[2]}


def test_chat_prompt_is_traced_in_the_chat_template(trace_context):
    plain = json.loads(_artifact(circuit_trace.run(trace_context()), "graph.json"))
    chat = json.loads(_artifact(circuit_trace.run(trace_context(chat=True)), "graph.json"))
    assert len(chat["prompt"]["tokens"]) > len(plain["prompt"]["tokens"])
    assert "assistant" in "".join(token["text"] for token in chat["prompt"]["tokens"])


def test_overlong_prompt_is_refused(trace_context):
    with pytest.raises(CheckParameterError, match="shorten the prompt"):
        circuit_trace.run(trace_context(prompt="bread " * 200))


def test_thresholds_decide_the_verdict(trace_context):
    result = circuit_trace.run(trace_context({"min_rank_agreement": -1.0, "max_error_share": 1.0}))
    assert result.verdict == PASS
    share = result.metrics["error_share"]
    assert 0 < share < 1
    failing = circuit_trace.run(trace_context({"max_error_share": share / 2}))
    assert failing.verdict == FAIL
    assert "error share" in failing.summary
    unmeasurable = circuit_trace.run(
        trace_context({"min_rank_agreement": 0.5}, n_ablation_checks=1)
    )
    assert unmeasurable.verdict == INCONCLUSIVE
    assert unmeasurable.metrics["rank_agreement"] is None


def test_random_lens_that_passes_the_error_share_fails_the_reconstruction_bar(trace_context):
    loose = {"max_error_share": 0.9}
    assert circuit_trace.run(trace_context(loose)).verdict == PASS
    result = circuit_trace.run(trace_context({**loose, "max_relative_error": 0.5}))
    assert result.verdict == FAIL
    assert min(result.metrics["relative_error_norm_by_layer"].values()) > 1
    assert "Warning" in result.summary


STORE = Path(os.environ.get("ASSAY_MODEL_STORE", Path(__file__).parents[2] / "var" / "models"))
GGUF = STORE / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_LENSES = sorted(
    cfg.parent
    for cfg in (Path(__file__).parents[2] / "interp_jobs" / "lenses").glob("smollm2-*/**/cfg.json")
)


@pytest.mark.smollm2
@pytest.mark.skipif(
    not GGUF.is_file() and os.environ.get("ASSAY_REQUIRE_DEMO_MODEL") != "1",
    reason=f"demo model not in the store ({GGUF})",
)
def test_smollm2_paris_trace_reports_error_share_and_rank_agreement(make_context, tmp_path):
    lens_dir = (
        SHIPPED_LENSES[0]
        if SHIPPED_LENSES
        else save_random_lens(
            tmp_path / "lens", d_in=576, d_sae=1024, hook_name="blocks.15.hook_resid_post"
        )
    )
    started = time.monotonic()
    context = make_context(
        circuit_trace,
        parameters={
            "prompt": "The capital of France is",
            "target": " Paris",
            "max_nodes": 8,
            "n_ablation_checks": 5,
        },
        model=ModelRef(
            path=str(GGUF),
            format="gguf",
            weights_digest="",
            file_digests={},
            name="SmolLM2-135M-Instruct",
        ),
        lenses=(LensRef(path=str(lens_dir), name="smollm2"),),
    )
    result = circuit_trace.run(context)
    graph = json.loads(_artifact(result, "graph.json"))
    print(
        f"\nSmolLM2 circuit_trace ({lens_dir.name}): {json.dumps(result.metrics)} "
        f"in {time.monotonic() - started:.1f} s"
    )
    assert graph["metric"]["max_abs_logit_difference_spliced_vs_unmodified"] < 1e-3
    assert graph["metric"]["unmodified"] > -3  # ' Paris' is a likely continuation
    assert len(graph["ablations"]["checks"]) == 5
    assert 0 <= result.metrics["error_share"] <= 1
