"""A JumpReLU lens written in Gemma Scope 2's layout reads back, through SAELens's gemma_3
converter and through circuit-tracer's Gemma Scope 2 loader, as the same features."""

import json
from pathlib import Path

import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading import gemma_scope
from interp_jobs.engine.loading.lenses import load_lens
from tests.factories import save_random_lens

D_IN, D_SAE = 32, 64
SHIPPED = sorted(
    (Path(__file__).parents[2] / "interp_jobs" / "lenses").glob("gemma3-270m-*/gemma-scope-2")
)


def _jumprelu_lens(directory: Path, *, apply_b_dec_to_input: bool, seed: int = 0):
    """A random JumpReLU lens (non-negative thresholds) in SAELens's format, loaded."""
    from sae_lens import SAE
    from sae_lens.saes import JumpReLUSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    config = JumpReLUSAEConfig(
        d_in=D_IN,
        d_sae=D_SAE,
        apply_b_dec_to_input=apply_b_dec_to_input,
        metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post", model_name="tiny"),
    )
    lens = SAE.get_sae_class_for_architecture("jumprelu")(config)
    with torch.no_grad():
        for param in lens.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
        lens.threshold.abs_()
    lens.save_model(directory)
    return load_lens(directory)


@pytest.fixture(params=[False, True], ids=["gemma-convention", "b_dec-on-input"])
def saved(request, tmp_path):
    lens = _jumprelu_lens(tmp_path / "lens", apply_b_dec_to_input=request.param)
    folder = gemma_scope.save_gemma_scope_2(lens, tmp_path / "gs", model_name="gemma-3-270m")
    return lens, folder


def test_the_folder_follows_gemma_scope_2s_layout(saved):
    from safetensors import safe_open

    _, folder = saved
    assert (
        folder.relative_to(folder.parents[1]).as_posix() == "resid_post/layer_1_width_64_l0_small"
    )
    with safe_open(str(folder / "params.safetensors"), framework="pt") as handle:
        shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    assert shapes == {
        "w_enc": [D_IN, D_SAE],
        "w_dec": [D_SAE, D_IN],
        "b_enc": [D_SAE],
        "b_dec": [D_IN],
        "threshold": [D_SAE],
    }
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "jump_relu"
    assert config["hf_hook_point_in"] == "model.layers.1.output"


def test_sae_lens_reads_back_the_same_features(saved):
    lens, folder = saved
    back = gemma_scope.load_with_sae_lens(folder)
    assert back.cfg.architecture() == "jumprelu"
    assert back.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert back.cfg.metadata.model_name == "google/gemma-3-270m"
    x = torch.randn(16, D_IN) * 2
    torch.testing.assert_close(back.encode(x), lens.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(back.decode(back.encode(x)), lens.decode(lens.encode(x)))
    assert int((lens.encode(x) > 0).sum()) > 0  # the comparison is not between two zeros


def test_circuit_tracer_reads_back_the_same_features(saved):
    lens, folder = saved
    transcoder = gemma_scope.load_with_circuit_tracer(folder)
    assert transcoder.layer_idx == 1
    x = torch.randn(16, D_IN) * 2
    with torch.no_grad():
        features = transcoder.encode(x)
        torch.testing.assert_close(features, lens.encode(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(transcoder.decode(features), lens.decode(lens.encode(x)))


def test_negative_thresholds_are_refused(tmp_path):
    lens = _jumprelu_lens(tmp_path / "lens", apply_b_dec_to_input=False)
    with torch.no_grad():
        lens.threshold[0] = -0.1
    with pytest.raises(PermanentEngineError, match="threshold is negative"):
        gemma_scope.save_gemma_scope_2(lens, tmp_path / "gs", model_name="gemma-3-270m")


def test_only_jumprelu_lenses_are_written(tmp_path):
    lens = load_lens(save_random_lens(tmp_path / "lens"))
    with pytest.raises(PermanentEngineError, match="JumpReLU"):
        gemma_scope.save_gemma_scope_2(lens, tmp_path / "gs", model_name="gemma-3-270m")


def test_a_folder_outside_the_layout_is_refused(tmp_path):
    with pytest.raises(PermanentEngineError, match="not a Gemma Scope 2 resid_post folder"):
        gemma_scope.load_with_sae_lens(tmp_path / "some_lens")


@pytest.mark.skipif(not SHIPPED, reason="no shipped Gemma lens")
def test_the_shipped_gemma_lens_is_the_same_in_both_formats():
    (root,) = SHIPPED
    (folder,) = sorted((root / "resid_post").iterdir())
    lens = load_lens(root.parent)
    x = torch.randn(8, lens.cfg.d_in) * 20
    for back in (
        gemma_scope.load_with_sae_lens(folder),
        gemma_scope.load_with_circuit_tracer(folder),
    ):
        with torch.no_grad():
            torch.testing.assert_close(back.encode(x), lens.encode(x), atol=1e-4, rtol=1e-4)


def test_the_lens_trains_on_the_risk_text_only_when_asked():
    required = ["m.gguf", "--layer", "9", "--n-tokens", "1000", "--out", "o"]
    args = gemma_scope._parser().parse_args(required)
    assert gemma_scope._corpus(args.corpus).name == "stdlib-docs-v1"
    assert args.pre_act_loss is None
    args = gemma_scope._parser().parse_args(
        [*required, "--corpus", gemma_scope.MIX, "--pre-act-loss", "3e-6"]
    )
    mix = gemma_scope._corpus(args.corpus)
    assert mix.name == gemma_scope.MIX
    assert any(d.id.startswith("safety-tuning-v1:") for d in mix.documents)
    assert args.pre_act_loss == pytest.approx(3e-6)


@pytest.mark.skipif(not SHIPPED, reason="no shipped Gemma lens")
def test_the_shipped_gemma_lens_readme_states_the_fidelity_its_record_holds():
    (root,) = SHIPPED
    metrics = json.loads((root.parent / "training.json").read_text())["fidelity"]["metrics"]
    stated = dict(
        line[2:].split(": ", 1)
        for line in (root.parent / "README.md").read_text().splitlines()
        if line.startswith("- ") and line[2:].split(": ", 1)[0] in metrics
    )
    assert len(stated) >= 8
    for key, value in stated.items():
        assert float(value) == pytest.approx(metrics[key]), key
