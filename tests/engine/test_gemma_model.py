"""Gemma 3 in the engine: a tiny Gemma3ForCausalLM built from a config, saved, loaded back
through the engine, and its hook points checked against the model's own tensors.

Gemma differs from Llama where a wrong hook would still give plausible numbers: embeddings
are scaled by sqrt(d_model) inside the embedding module, every sublayer is normalised on the
way out as well as in (what it adds to the residual is the post-norm's output), the MLP's
input norm is ``pre_feedforward_layernorm``, and its RMSNorms scale by ``1 + weight``.
"""

from pathlib import Path

import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import all_hook_names, replace_activation, resolve_hook, run_to
from interp_jobs.engine.loading.architectures import family_named, final_norm_scale
from interp_jobs.engine.loading.models import load_model
from tests.factories import TINY_D_MODEL, build_bpe_tokenizer

N_LAYERS = 3
PROMPTS = ["How do I bake bread at home?", "Name three rivers."]


def save_tiny_gemma(
    directory: Path,
    *,
    seed: int = 0,
    n_layers: int = N_LAYERS,
    chat_template: bool = False,
    tokenizer=None,
    random_norms: bool = True,
    edit=None,
) -> Path:
    """A tiny seeded Gemma3ForCausalLM (text only) with the probe-trained BPE tokenizer.

    Norm weights are random (Gemma initialises them to zero, which would hide a missing
    ``1 + weight``), one layer uses sliding-window attention like the real model, and, like
    the real base model, the tokenizer has no chat template unless asked for. ``edit(model,
    tokenizer)`` may change the weights before they are saved (planted features).
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    tokenizer = tokenizer or build_bpe_tokenizer()
    if not chat_template:
        tokenizer.chat_template = None
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TINY_D_MODEL,
        intermediate_size=64,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        query_pre_attn_scalar=8,
        sliding_window=16,
        layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"],
        max_position_embeddings=256,
        pad_token_id=1,
        bos_token_id=2,
        eos_token_id=3,
    )
    model = Gemma3ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if random_norms and name.endswith("norm.weight"):
                param.copy_(torch.randn_like(param) * 0.5)
        if edit is not None:
            edit(model, tokenizer)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return load_model(save_tiny_gemma(tmp_path_factory.mktemp("gemma")), "hf_dir")


def _reference(gemma, batch) -> dict:
    """Every site of every block, recomputed from the model's own modules and outputs."""
    blocks = gemma.model.model.layers
    store: dict = {}
    handles = []
    for i, block in enumerate(blocks):
        for attr, key in (
            ("post_attention_layernorm", "attn"),
            ("pre_feedforward_layernorm", "ln2"),
            ("post_feedforward_layernorm", "mlp"),
        ):
            handles.append(
                getattr(block, attr).register_forward_hook(
                    lambda m, a, out, i=i, key=key: store.__setitem__((i, key, "out"), out)
                )
            )
        handles.append(
            block.pre_feedforward_layernorm.register_forward_pre_hook(
                lambda m, a, i=i: store.__setitem__((i, "ln2", "in"), a[0])
            )
        )
    try:
        with torch.inference_mode():
            out = gemma.model(**batch, output_hidden_states=True, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {"hidden": out.hidden_states, "sites": store}


def test_tiny_gemma_loads_as_the_gemma3_family(gemma):
    assert (gemma.family, gemma.model_type) == ("gemma3", "gemma3_text")
    assert (gemma.n_layers, gemma.d_model) == (N_LAYERS, TINY_D_MODEL)
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert not gemma.has_chat_template  # a base model: prompts go in as plain text


def test_residual_hooks_equal_the_models_hidden_states(gemma):
    batch = gemma.encode(PROMPTS)
    ref = _reference(gemma, batch)["hidden"]
    names = [f"blocks.{i}.hook_resid_pre" for i in range(N_LAYERS)]
    names += [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS - 1)]
    acts = run_to(gemma, batch["input_ids"], batch["attention_mask"], names)
    for i in range(N_LAYERS):
        torch.testing.assert_close(acts[f"blocks.{i}.hook_resid_pre"], ref[i])
    for i in range(N_LAYERS - 1):
        torch.testing.assert_close(acts[f"blocks.{i}.hook_resid_post"], ref[i + 1])


def test_the_first_residual_is_the_embedding_scaled_by_sqrt_d_model(gemma):
    batch = gemma.encode(PROMPTS)
    acts = run_to(gemma, batch["input_ids"], batch["attention_mask"], ["blocks.0.hook_resid_pre"])
    raw = gemma.model.model.embed_tokens.weight[batch["input_ids"]]
    torch.testing.assert_close(acts["blocks.0.hook_resid_pre"], raw * TINY_D_MODEL**0.5)


def test_attn_and_mlp_out_are_what_each_sublayer_adds_to_the_residual(gemma):
    """resid_mid = resid_pre + attn_out and resid_post = resid_mid + mlp_out: the outputs of
    the post-norms, not of self_attn / mlp (which Llama-style hooks would read)."""
    batch = gemma.encode(PROMPTS)
    names = all_hook_names(N_LAYERS)
    with torch.inference_mode():
        acts = run_to(gemma, batch["input_ids"], batch["attention_mask"], names)
    for i in range(N_LAYERS):
        a = {
            site: acts[f"blocks.{i}.{site}"]
            for site in (
                "hook_resid_pre",
                "hook_attn_out",
                "hook_resid_mid",
                "hook_mlp_out",
                "hook_resid_post",
            )
        }
        torch.testing.assert_close(a["hook_resid_pre"] + a["hook_attn_out"], a["hook_resid_mid"])
        torch.testing.assert_close(a["hook_resid_mid"] + a["hook_mlp_out"], a["hook_resid_post"])


def test_mlp_in_is_the_pre_feedforward_norm_output_of_resid_mid(gemma):
    batch = gemma.encode(PROMPTS)
    sites = _reference(gemma, batch)["sites"]
    names = [f"blocks.{i}.ln2.hook_normalized" for i in range(N_LAYERS)]
    names += [f"blocks.{i}.hook_resid_mid" for i in range(N_LAYERS)]
    acts = run_to(gemma, batch["input_ids"], batch["attention_mask"], names)
    for i in range(N_LAYERS):
        torch.testing.assert_close(
            acts[f"blocks.{i}.ln2.hook_normalized"], sites[(i, "ln2", "out")]
        )
        torch.testing.assert_close(acts[f"blocks.{i}.hook_resid_mid"], sites[(i, "ln2", "in")])


def test_hooks_attach_to_the_gemma_modules(gemma):
    block = gemma.model.model.layers[1]
    expected = {
        "hook_attn_out": (block.post_attention_layernorm, "post"),
        "hook_resid_mid": (block.pre_feedforward_layernorm, "pre"),
        "ln2.hook_normalized": (block.mlp, "pre"),
        "hook_mlp_out": (block.post_feedforward_layernorm, "post"),
    }
    for suffix, (module, phase) in expected.items():
        point = resolve_hook(gemma, f"blocks.1.{suffix}")
        assert (point.module, point.phase) == (module, phase)


def test_final_norm_scale_is_one_plus_weight(gemma):
    norm = gemma.model.model.norm
    scale = final_norm_scale(gemma.model, family_named("gemma3"))
    torch.testing.assert_close(scale, norm.weight.detach() + 1.0)
    x = torch.randn(2, TINY_D_MODEL)
    unit = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps)
    torch.testing.assert_close(norm(x), unit * scale)


def test_replacing_mlp_out_changes_the_residual_by_exactly_the_edit(gemma):
    batch = gemma.encode(PROMPTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    name, post = "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"
    clean = run_to(gemma, ids, mask, [post])[post]
    shift = torch.randn(TINY_D_MODEL)
    with replace_activation(gemma, name, lambda act: act + shift):
        edited = run_to(gemma, ids, mask, [post])[post]
    torch.testing.assert_close(edited - clean, shift.expand_as(clean), atol=1e-5, rtol=0)


def test_the_multimodal_gemma3_wrapper_is_refused():
    from interp_jobs.engine.loading.architectures import family_for

    with pytest.raises(PermanentEngineError, match="Gemma 3 text models"):
        family_for("gemma3")
