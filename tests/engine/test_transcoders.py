"""Transcoder sets on disk: SAELens loads every layer, circuit-tracer loads the export, the
manifest's digests are checked, and a set that misses or repeats a layer is refused."""

import json
from pathlib import Path

import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading import transcoders
from tests.factories import TINY_D_MODEL, TINY_D_TRANSCODER, save_random_transcoders


@pytest.fixture(scope="module")
def set_dir(tmp_path_factory):
    return save_random_transcoders(tmp_path_factory.mktemp("transcoders"), seed=3)


def test_every_layer_of_a_saved_set_loads_with_sae_lens_as_a_jumprelu_transcoder(set_dir):
    info = transcoders.read_set(set_dir)
    lenses = transcoders.load_set_lenses(info)
    assert [type(lens).__name__ for lens in lenses] == ["JumpReLUTranscoder"] * 3
    assert [transcoders.transcoder_layer(lens) for lens in lenses] == [0, 1, 2]
    assert lenses[1].cfg.metadata.hook_name == "blocks.1.ln2.hook_normalized"
    assert lenses[1].cfg.metadata.hook_name_out == "blocks.1.hook_mlp_out"
    assert lenses[0].cfg.d_sae == TINY_D_TRANSCODER


def test_a_changed_file_is_refused_by_the_manifest_digests(tmp_path):
    root = save_random_transcoders(tmp_path / "set")
    weights = root / "layer_01" / "sae_weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(PermanentEngineError, match=r"changed or missing \['layer_01/sae_w"):
        transcoders.read_set(root)


def test_an_unlisted_file_is_refused_too(tmp_path):
    root = save_random_transcoders(tmp_path / "set")
    (root / "layer_00" / "extra.bin").write_bytes(b"x")
    with pytest.raises(PermanentEngineError, match="unlisted"):
        transcoders.read_set(root)


def test_circuit_tracer_reads_the_export_and_computes_what_sae_lens_computes(set_dir, tmp_path):
    import yaml

    transcoders.circuit_tracer()
    from circuit_tracer.utils.hf_utils import load_transcoders

    lenses = transcoders.load_set_lenses(transcoders.read_set(set_dir))
    transcoders.export_circuit_tracer(lenses, tmp_path / "ct", scan="tiny")
    config = yaml.safe_load((tmp_path / "ct" / "config.yaml").read_text())
    loaded = load_transcoders(config, device=torch.device("cpu"), lazy_decoder=False)
    in_memory = transcoders.to_circuit_tracer(lenses, scan="tiny")
    x = torch.randn(7, TINY_D_MODEL, generator=torch.Generator().manual_seed(0))
    for layer, lens in enumerate(lenses):
        expected = lens.encode(x)
        assert (expected > 0).any()  # the comparison is not vacuous
        for other in (loaded, in_memory):
            acts = other[layer].encode(x)
            assert torch.allclose(acts, expected, atol=1e-6)
            assert torch.allclose(other[layer].decode(acts), lens.decode(expected), atol=1e-5)


def test_a_set_missing_a_layer_or_repeating_one_is_refused(set_dir):
    lenses = transcoders.load_set_lenses(transcoders.read_set(set_dir))
    with pytest.raises(PermanentEngineError, match=r"missing layers \[2\]"):
        transcoders.order_layers(lenses[:2], 3)
    with pytest.raises(PermanentEngineError, match="Two transcoders read layer 1"):
        transcoders.order_layers([lenses[0], lenses[1], lenses[1]], 3)


def test_an_sae_on_the_residual_stream_is_not_a_transcoder(tmp_path):
    from interp_jobs.engine.loading.lenses import load_lens
    from tests.factories import save_random_lens

    lens = load_lens(save_random_lens(tmp_path / "sae"))
    assert not transcoders.is_mlp_transcoder(lens)
    with pytest.raises(PermanentEngineError, match="not a per-layer MLP transcoder"):
        transcoders.transcoder_layer(lens)


def test_circuit_tracer_imports_under_huggingface_hub_1_and_later():
    module = transcoders.circuit_tracer()
    import huggingface_hub.constants as constants

    assert module.__version__.startswith("0.5")
    assert constants.HF_HUB_ENABLE_HF_TRANSFER is False or hasattr(constants, "HF_HUB_OFFLINE")


@pytest.mark.parametrize(
    "set_dir",
    sorted((Path(__file__).parents[2] / "interp_jobs" / "lenses").glob("*-mlp-transcoders-*")),
    ids=lambda p: p.name,
)
def test_each_shipped_sets_readme_states_the_fidelity_its_record_holds(set_dir):
    from interp_jobs.engine.transcoder_training import (
        TRAINING_FILE,
        layer_table,
        loss_line,
        quality_phrase,
    )

    record = json.loads((set_dir / TRAINING_FILE).read_text())
    readme = (set_dir / "README.md").read_text()
    assert layer_table(record) in readme
    assert loss_line(record) in readme
    assert quality_phrase(record) in " ".join(readme.split())


@pytest.mark.parametrize(
    ("architecture", "output_hook"),
    [
        ("LlamaForCausalLM", "mlp.hook_out"),
        ("Qwen3ForCausalLM", "mlp.hook_out"),  # its mapping has no hook_mlp_out
        ("Gemma3ForCausalLM", "hook_mlp_out"),  # its mapping has no mlp.hook_out: post-norm
    ],
)
def test_circuit_tracer_is_told_the_output_hook_its_mapping_has_for_the_architecture(
    architecture, output_hook
):
    from circuit_tracer.utils.tl_nnsight_mapping import get_mapping

    hooks = transcoders.circuit_tracer_hooks(architecture)
    assert hooks["feature_output_hook"] == output_hook
    assert output_hook in get_mapping(architecture).feature_hook_mapping


def test_an_architecture_circuit_tracer_cannot_map_is_refused_clearly():
    with pytest.raises(PermanentEngineError, match="no mapping for GPT2LMHeadModel"):
        transcoders.circuit_tracer_hooks("GPT2LMHeadModel")
