import json

import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import run_to
from interp_jobs.engine.loading.lenses import check_lens_fits, lens_info, load_lens

HOOK = "blocks.1.hook_resid_post"


def _config(architecture: str, d_in: int, hook_name: str, **extra):
    from sae_lens import saes
    from sae_lens.saes.sae import SAEMetadata

    config_class = {
        "standard": saes.StandardSAEConfig,
        "topk": saes.TopKSAEConfig,
        "jumprelu": saes.JumpReLUSAEConfig,
        "gated": saes.GatedSAEConfig,
        "transcoder": saes.TranscoderConfig,
    }[architecture]
    metadata = SAEMetadata(hook_name=hook_name, model_name="tiny", **extra.pop("metadata", {}))
    return config_class(d_in=d_in, d_sae=64, metadata=metadata, **extra)


def build_lens(architecture: str, *, d_in: int = 32, hook_name: str = HOOK, seed: int = 0, **extra):
    """A lens of the given architecture with random (not default) weights, seeded."""
    from sae_lens import SAE

    torch.manual_seed(seed)
    config = _config(architecture, d_in, hook_name, **extra)
    lens = SAE.get_sae_class_for_architecture(config.architecture())(config)
    with torch.no_grad():
        for name, param in lens.named_parameters():
            param.copy_(torch.randn_like(param) * 0.3)
            if name == "threshold":  # JumpReLU thresholds are positive
                param.abs_()
    return lens


LENS_CASES = {
    "standard": {},
    "topk": {"k": 4},
    "jumprelu": {},
    "gated": {},
    "transcoder": {
        "d_out": 32,
        "apply_b_dec_to_input": False,
        "metadata": {"hook_name_out": "blocks.1.hook_mlp_out"},
    },
}


@pytest.mark.parametrize("architecture", list(LENS_CASES))
def test_lens_round_trips_through_sae_lens_on_disk_format(tmp_path, architecture):
    hook = "blocks.1.ln2.hook_normalized" if architecture == "transcoder" else HOOK
    lens = build_lens(architecture, hook_name=hook, **LENS_CASES[architecture])
    lens.save_model(tmp_path)
    loaded = load_lens(tmp_path, device="cpu", dtype="float32")
    assert type(loaded) is type(lens)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = lens.encode(x), loaded.encode(x)
        torch.testing.assert_close(loaded.decode(actual), lens.decode(expected))
    torch.testing.assert_close(actual, expected)
    assert actual.count_nonzero() > 0
    assert lens_info(loaded)["architecture"] == architecture


def test_lens_info_reports_shape_hook_and_dtype(tmp_path):
    build_lens("topk", k=4).save_model(tmp_path)
    info = lens_info(load_lens(tmp_path, dtype="bfloat16"))
    assert info == {
        "architecture": "topk",
        "d_in": 32,
        "d_sae": 64,
        "d_out": None,
        "hook_name": HOOK,
        "hook_name_out": None,
        "model_name": "tiny",
        "dtype": "bfloat16",
    }


def test_a_lens_of_the_right_width_fits_and_encodes_real_activations(tmp_path, loaded, batch):
    build_lens("standard").save_model(tmp_path)
    lens = load_lens(tmp_path)
    check_lens_fits(lens, loaded)
    acts = run_to(loaded, batch["input_ids"], batch["attention_mask"], [HOOK])[HOOK]
    with torch.inference_mode():
        assert lens.encode(acts).shape == (*acts.shape[:-1], 64)


def test_width_mismatch_names_both_widths(tmp_path, llama_loaded):
    build_lens("standard", d_in=48).save_model(tmp_path)
    with pytest.raises(PermanentEngineError, match=r"width 48.*width 32"):
        check_lens_fits(load_lens(tmp_path), llama_loaded)


def test_transcoder_output_width_is_checked_too(tmp_path, llama_loaded):
    build_lens(
        "transcoder",
        hook_name="blocks.1.ln2.hook_normalized",
        d_out=40,
        apply_b_dec_to_input=False,
        metadata={"hook_name_out": "blocks.1.hook_mlp_out"},
    ).save_model(tmp_path)
    with pytest.raises(PermanentEngineError, match=r"writes vectors of width 40.*width 32"):
        check_lens_fits(load_lens(tmp_path), llama_loaded)


@pytest.mark.parametrize(
    ("hook_name", "message"),
    [
        ("blocks.7.hook_resid_post", "model has 3 layers"),
        ("blocks.1.attn.hook_z", "Unknown hook point"),
    ],
)
def test_lens_on_a_hook_the_model_lacks_is_refused(tmp_path, llama_loaded, hook_name, message):
    build_lens("standard", hook_name=hook_name).save_model(tmp_path)
    with pytest.raises(PermanentEngineError, match=f"reads hook point .*{message}"):
        check_lens_fits(load_lens(tmp_path), llama_loaded)


def test_directory_without_lens_files_is_refused(tmp_path):
    with pytest.raises(PermanentEngineError, match=r"missing cfg.json, sae_weights.safetensors"):
        load_lens(tmp_path)


def test_unknown_lens_architecture_is_refused(tmp_path):
    build_lens("standard").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "architecture": "hypernet"}))
    with pytest.raises(PermanentEngineError, match=r"'hypernet'.*known: .*jumprelu"):
        load_lens(tmp_path)


def test_corrupt_lens_weights_are_a_permanent_error(tmp_path):
    build_lens("standard").save_model(tmp_path)
    (tmp_path / "sae_weights.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(PermanentEngineError, match="Could not load the lens"):
        load_lens(tmp_path)


def test_unreadable_lens_config_is_refused(tmp_path):
    build_lens("standard").save_model(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    with pytest.raises(PermanentEngineError, match="not readable JSON"):
        load_lens(tmp_path)
