"""The check kinds that read a model and a lens, run on a tiny Gemma 3 (and, when it is in the
model store, on the real Gemma 3 270M with the shipped lens).

The tiny Gemma is planted the way the Llama check tests are: tokens found only in weapons
prompts carry a direction in their embeddings, and one lens feature reads it at
``blocks.1.hook_resid_post``. Gemma scales embeddings by sqrt(d_model) and every sublayer
adds a post-normalised (unit-RMS) vector to the residual, so the mark is planted larger than
the Llama one and the feature's threshold sits between the mark and that noise. Like the real
model, the tiny one has no chat template: prompts go in as plain text.
"""

import json
import os
import time
from pathlib import Path

import pytest
import torch

from interp_jobs.checks import (
    behavior_probe,
    feature_activation_audit,
    feature_discovery,
    sae_fidelity,
    weights_fingerprint,
)
from interp_jobs.checks.base import FAIL, INCONCLUSIVE, PASS, CheckContext, LensRef, ModelRef
from interp_jobs.engine.loading.fingerprint import fingerprint_model
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.probes import load_probe_set
from tests.engine.test_gemma_model import save_tiny_gemma
from tests.factories import (
    PLANTED_AXIS,
    PLANTED_FEATURE,
    STORE,
    TINY_D_MODEL,
    build_bpe_tokenizer_for,
    catalog,
    save_random_lens,
)

MARK = 24.0  # the mark's size in the residual (after the sqrt(d_model) embedding scale)
SCALE = 1.0
REAL_GGUF = STORE / "gemma3-270m" / "gemma-3-270m-q4_k_m.gguf"
SHIPPED = sorted(
    p
    for p in (Path(__file__).parents[2] / "interp_jobs" / "lenses").glob("gemma3-270m-*")
    if (p / "cfg.json").is_file()
)


def _plain_token_ids(tokenizer, texts) -> set[int]:
    return set().union(*(tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts))


def _planter(direction: torch.Tensor, splits):
    def plant(model, tokenizer) -> None:
        probes = load_probe_set("v2")
        neutral = _plain_token_ids(tokenizer, [p.prompt for p in probes.neutral_prompts])
        risk_prompts = load_probe_set("v2", PLANTED_AXIS, split=splits).for_axis(PLANTED_AXIS)
        marked = sorted(_plain_token_ids(tokenizer, [p.prompt for p in risk_prompts]) - neutral)
        scale = model.config.hidden_size**0.5
        model.model.embed_tokens.weight[marked] += (MARK / scale) * direction

    return plant


def _planted_lens(directory: Path, direction: torch.Tensor) -> Path:
    save_random_lens(directory)
    lens = load_lens(directory)
    with torch.no_grad():
        lens.b_dec -= (lens.b_dec @ direction) * direction
        lens.W_enc -= torch.outer(direction, direction @ lens.W_enc)
        lens.W_enc[:, PLANTED_FEATURE] = SCALE * direction
        lens.b_enc[PLANTED_FEATURE] = -SCALE * MARK / 2
    lens.save_model(directory)
    return directory


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(TINY_D_MODEL), dim=0)
    model_dir = save_tiny_gemma(
        tmp_path_factory.mktemp("planted-gemma"),
        tokenizer=build_bpe_tokenizer_for("v2", vocab_size=2000),
        random_norms=False,
        edit=_planter(direction, splits=None),
    )
    lens_dir = _planted_lens(tmp_path_factory.mktemp("planted-gemma-lens"), direction)
    recorded = fingerprint_model(model_dir, "hf_dir")
    model = ModelRef(
        path=str(model_dir),
        format="hf_dir",
        weights_digest=recorded.weights_digest,
        file_digests=recorded.files,
        name="tiny-gemma@1",
    )
    return {"model": model, "lenses": (LensRef(str(lens_dir), "", "tiny"),)}


def _run(module, refs, parameters=None, thresholds=None, **fields):
    context = CheckContext(
        parameters=module.Parameters.parse(parameters or {}, what="parameters"),
        thresholds=module.Thresholds.parse(thresholds or {}, what="thresholds"),
        **refs,
        **fields,
    )
    return module.run(context)


def _json(result, title: str) -> dict:
    return json.loads(next(a.data for a in result.artifacts if a.title == title))


def test_weights_fingerprint_passes_on_gemma_and_names_a_changed_file(gemma, tmp_path):
    import shutil

    assert _run(weights_fingerprint, gemma).verdict == PASS
    copy = Path(shutil.copytree(gemma["model"].path, tmp_path / "copy"))
    (copy / "model.safetensors").write_bytes(b"changed")
    moved = {**gemma, "model": ModelRef(**{**gemma["model"].__dict__, "path": str(copy)})}
    result = _run(weights_fingerprint, moved)
    assert result.verdict == FAIL
    assert "model.safetensors" in result.summary


def test_sae_fidelity_measures_a_lens_on_gemmas_residual(gemma):
    thresholds = {"max_dead_fraction": 1.0, "min_l0": 0.0}
    result = _run(sae_fidelity, gemma, {"n_sequences": 4, "seq_len": 32}, thresholds)
    assert result.verdict == PASS
    evidence = _json(result, "fidelity.json")
    assert evidence["metrics"]["n_tokens"] == 4 * 31
    assert evidence["positions"]["sink_positions"] == 1
    assert all(torch.isfinite(torch.tensor(v)) for v in evidence["per_sequence"][0].values())


def test_feature_discovery_ranks_the_planted_gemma_feature_first(gemma):
    parameters = {"axis": PLANTED_AXIS, "top_n": 5, "contexts_per_feature": 2}
    result = _run(feature_discovery, gemma, parameters, {"min_auroc": 0.9, "min_features_found": 1})
    report = _json(result, "discovery.json")
    assert report["features"][0]["feature"] == PLANTED_FEATURE
    assert result.metrics["best_auroc_feature"] == PLANTED_FEATURE
    assert result.verdict == PASS


def test_feature_activation_audit_sees_the_planted_gemma_feature_on_its_axis_only(gemma):
    result = _run(
        feature_activation_audit,
        gemma,
        {"probe_axes": [PLANTED_AXIS, "neutral"], "n_prompts": 16},
        {"max_firing_rate_on_neutral": 0.0, "min_firing_rate_on_own_axis": 0.95},
        catalog=catalog((PLANTED_FEATURE, "weapon words", PLANTED_AXIS)),
    )
    report = json.loads(result.artifacts[0].data)
    axes = report["features"][0]["axes"]
    assert axes[PLANTED_AXIS]["firing_rate"]["value"] >= 0.95
    assert axes["neutral"]["firing_rate"]["value"] == 0.0
    assert result.verdict == PASS


def test_behavior_probe_runs_on_a_base_gemma_without_a_chat_template(gemma):
    parameters = {
        "axes": ["weapons"],
        "n_prompts": 2,
        "n_neutral_prompts": 2,
        "n_over_refusal_prompts": 1,
        "max_new_tokens": 4,
    }
    first = _run(behavior_probe, gemma, parameters)
    second = _run(behavior_probe, gemma, parameters)
    assert first.artifacts[0].data == second.artifacts[0].data
    report = json.loads(first.artifacts[0].data)
    assert report["generation"]["chat_template_applied"] is False
    assert len(report["responses"]) == 5
    assert first.verdict == INCONCLUSIVE  # no thresholds were set


# --- the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_gemma():
    if not REAL_GGUF.is_file() or not SHIPPED:
        pytest.skip(f"Gemma 3 270M not in the store ({REAL_GGUF}) or no shipped Gemma lens")
    recorded = fingerprint_model(REAL_GGUF, "gguf")
    model = ModelRef(
        path=str(REAL_GGUF),
        format="gguf",
        weights_digest=recorded.weights_digest,
        file_digests=recorded.files,
        name="gemma-3-270m",
    )
    return {"model": model, "lenses": (LensRef(str(SHIPPED[0]), "", SHIPPED[0].name),)}


def _timed(label: str, call):
    started = time.perf_counter()
    result = call()
    print(f"\n{label}: {time.perf_counter() - started:.1f} s, {result.verdict}, {result.metrics}")
    return result


@pytest.mark.skipif(
    os.environ.get("ASSAY_GEMMA_SMOKE") != "1", reason="set ASSAY_GEMMA_SMOKE=1 (minutes of CPU)"
)
def test_real_gemma_smoke(real_gemma):
    """Each model-reading check kind once on Gemma 3 270M with the shipped lens."""
    assert (
        _timed("weights_fingerprint", lambda: _run(weights_fingerprint, real_gemma)).verdict == PASS
    )
    fidelity = _timed(
        "sae_fidelity", lambda: _run(sae_fidelity, real_gemma, {"n_sequences": 8, "seq_len": 64})
    )
    assert _json(fidelity, "fidelity.json")["metrics"]["explained_variance"] > 0.3
    discovery = _timed(
        "feature_discovery",
        lambda: _run(feature_discovery, real_gemma, {"axis": "weapons", "top_n": 5}),
    )
    top = json.loads(discovery.artifacts[0].data)["features"][0]["feature"]
    audit = _timed(
        "feature_activation_audit",
        lambda: _run(
            feature_activation_audit,
            real_gemma,
            {"n_prompts": 16},
            catalog=catalog((top, "top weapons feature", "weapons"), lens=SHIPPED[0].name),
        ),
    )
    assert audit.verdict == INCONCLUSIVE
    probe = _timed(
        "behavior_probe",
        lambda: _run(
            behavior_probe,
            real_gemma,
            {
                "n_prompts": 4,
                "n_neutral_prompts": 4,
                "n_over_refusal_prompts": 2,
                "max_new_tokens": 16,
            },
        ),
    )
    assert json.loads(probe.artifacts[0].data)["generation"]["chat_template_applied"] is False
