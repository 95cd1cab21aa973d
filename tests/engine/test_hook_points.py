import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import (
    SITES,
    all_hook_names,
    capture_activations,
    format_hook_name,
    parse_hook_name,
    replace_activation,
    resolve_hook,
    run_to,
)


def _blocks(loaded):
    return loaded.model.model.layers if loaded.family == "llama" else loaded.model.transformer.h


def _final_norm(loaded):
    return loaded.model.model.norm if loaded.family == "llama" else loaded.model.transformer.ln_f


def _hook_counts(model) -> list[tuple[int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _logits(loaded, batch):
    with torch.inference_mode():
        return loaded.model(**batch, use_cache=False).logits


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("blocks.0.hook_resid_pre", (0, "resid_pre")),
        ("blocks.2.hook_resid_post", (2, "resid_post")),
        ("blocks.1.hook_attn_out", (1, "attn_out")),
        ("blocks.1.hook_mlp_out", (1, "mlp_out")),
        ("blocks.1.hook_resid_mid", (1, "resid_mid")),
        ("blocks.1.ln2.hook_normalized", (1, "mlp_in")),
    ],
)
def test_hook_names_parse_to_layer_and_site(name, expected):
    assert parse_hook_name(name, n_layers=3) == expected
    assert format_hook_name(*expected) == name


@pytest.mark.parametrize("name", ["blocks.1.hook_z", "blocks.x.hook_resid_post", "embed", ""])
def test_unknown_hook_names_are_refused_with_examples(name):
    with pytest.raises(
        PermanentEngineError, match=r"Unknown hook point.*blocks.{i}.hook_resid_pre"
    ):
        parse_hook_name(name)


def test_layer_out_of_range_is_refused():
    with pytest.raises(PermanentEngineError, match="layer 3, but the model has 3 layers"):
        parse_hook_name("blocks.3.hook_resid_post", n_layers=3)


def test_hook_names_map_to_the_family_modules(loaded):
    block = _blocks(loaded)[1]
    attn, mid = (
        (block.self_attn, block.post_attention_layernorm)
        if loaded.family == "llama"
        else (block.attn, block.ln_2)
    )
    expected = {
        "resid_pre": (block, "pre"),
        "attn_out": (attn, "post"),
        "resid_mid": (mid, "pre"),
        "mlp_in": (block.mlp, "pre"),
        "mlp_out": (block.mlp, "post"),
        "resid_post": (block, "post"),
    }
    for site, (module, phase) in expected.items():
        point = resolve_hook(loaded, format_hook_name(1, site))
        assert (point.module, point.phase) == (module, phase)
    assert len(all_hook_names(loaded.n_layers)) == loaded.n_layers * len(SITES)


def test_captured_activations_have_batch_position_width_shape(loaded, batch):
    names = all_hook_names(loaded.n_layers)
    acts = run_to(loaded, batch["input_ids"], batch["attention_mask"], names)
    assert set(acts) == set(names)
    expected = (*batch["input_ids"].shape, loaded.d_model)
    assert all(tuple(a.shape) == expected for a in acts.values())


def test_residual_stream_matches_the_models_own_hidden_states(loaded, batch):
    n = loaded.n_layers
    names = [format_hook_name(i, s) for i in range(n) for s in ("resid_pre", "resid_post")]
    acts = run_to(loaded, batch["input_ids"], batch["attention_mask"], names)
    with torch.inference_mode():
        hidden = loaded.model(**batch, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["blocks.0.hook_resid_pre"], hidden[0])
    for i in range(n - 1):
        torch.testing.assert_close(acts[f"blocks.{i}.hook_resid_post"], hidden[i + 1])
        torch.testing.assert_close(acts[f"blocks.{i + 1}.hook_resid_pre"], hidden[i + 1])
    # transformers reports the last hidden state after the final norm.
    with torch.inference_mode():
        normed = _final_norm(loaded)(acts[f"blocks.{n - 1}.hook_resid_post"])
    torch.testing.assert_close(normed, hidden[n])


def test_block_outputs_decompose_into_attention_and_mlp_writes(loaded, batch):
    names = {site: format_hook_name(1, site) for site in SITES}
    acts = run_to(loaded, batch["input_ids"], batch["attention_mask"], names.values())
    a = {site: acts[name] for site, name in names.items()}
    torch.testing.assert_close(a["resid_pre"] + a["attn_out"], a["resid_mid"])
    torch.testing.assert_close(a["resid_mid"] + a["mlp_out"], a["resid_post"])
    with torch.inference_mode():
        mid_norm = resolve_hook(loaded, "blocks.1.hook_resid_mid").module
        torch.testing.assert_close(mid_norm(a["resid_mid"]), a["mlp_in"])


def _count_calls(modules, counter):
    def count(module, args, output):
        counter[0] += 1

    return [m.register_forward_hook(count) for m in modules]


def test_forward_pass_stops_after_the_deepest_hook(loaded, batch):
    later = [*_blocks(loaded)[1:], loaded.model.get_output_embeddings()]
    calls = [0]
    handles = _count_calls(later, calls)
    try:
        acts = run_to(loaded, batch["input_ids"], None, ["blocks.0.hook_resid_post"])
        assert calls[0] == 0
        with (
            torch.inference_mode(),
            capture_activations(
                loaded, ["blocks.0.hook_resid_post"], stop_after_deepest=False
            ) as full,
        ):
            loaded.model(**batch)
        assert calls[0] == len(later)
    finally:
        for handle in handles:
            handle.remove()
    assert acts["blocks.0.hook_resid_post"].shape[-1] == loaded.d_model
    assert "blocks.0.hook_resid_post" in full


def _capture_then_fail(loaded, names) -> None:
    with capture_activations(loaded, names):
        assert any(counts != (0, 0) for counts in _hook_counts(loaded.model))
        raise RuntimeError("boom")


def test_hooks_are_removed_after_an_exception_inside_capture(loaded, batch):
    assert all(counts == (0, 0) for counts in _hook_counts(loaded.model))
    names = all_hook_names(loaded.n_layers)
    with pytest.raises(RuntimeError, match="boom"):
        _capture_then_fail(loaded, names)
    assert all(counts == (0, 0) for counts in _hook_counts(loaded.model))


def test_hooks_are_removed_after_stopping_early_and_after_a_bad_replacement(loaded, batch):
    run_to(loaded, batch["input_ids"], batch["attention_mask"], ["blocks.0.hook_mlp_out"])
    assert all(counts == (0, 0) for counts in _hook_counts(loaded.model))
    with (
        pytest.raises(PermanentEngineError, match=r"must be a tensor of shape \(2, 6, 32\)"),
        replace_activation(loaded, "blocks.0.hook_resid_post", lambda x: x[..., :3]),
    ):
        _logits(loaded, batch)
    assert all(counts == (0, 0) for counts in _hook_counts(loaded.model))


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_in", "mlp_out", "resid_post"])
def test_identity_replacement_leaves_logits_unchanged_and_zeros_change_them(loaded, batch, site):
    name = format_hook_name(1, site)
    clean = _logits(loaded, batch)
    with replace_activation(loaded, name, lambda x: x.clone()):
        same = _logits(loaded, batch)
    with replace_activation(loaded, name, torch.zeros_like):
        ablated = _logits(loaded, batch)
    torch.testing.assert_close(same, clean)
    assert not torch.allclose(ablated, clean)
    torch.testing.assert_close(_logits(loaded, batch), clean)


def test_replacing_the_mlp_output_shows_up_downstream(loaded, batch):
    names = ["blocks.1.hook_resid_mid", "blocks.1.hook_resid_post"]
    with replace_activation(loaded, "blocks.1.hook_mlp_out", torch.zeros_like):
        acts = run_to(loaded, batch["input_ids"], batch["attention_mask"], names)
    torch.testing.assert_close(acts["blocks.1.hook_resid_post"], acts["blocks.1.hook_resid_mid"])


def test_replacement_keeps_gradients_for_attribution(loaded, batch):
    scale = torch.ones(loaded.d_model, requires_grad=True)
    with replace_activation(loaded, "blocks.0.hook_resid_post", lambda x: x * scale):
        loaded.model(**batch, use_cache=False).logits.sum().backward()
    assert scale.grad is not None
    assert scale.grad.abs().sum() > 0


def test_resid_mid_can_be_read_but_not_replaced(loaded):
    with (
        pytest.raises(PermanentEngineError, match="can be read but not replaced"),
        replace_activation(loaded, "blocks.0.hook_resid_mid", torch.zeros_like),
    ):
        pass


def test_capture_needs_at_least_one_valid_hook(loaded):
    with (
        pytest.raises(PermanentEngineError, match="No hook points"),
        capture_activations(loaded, []),
    ):
        pass
    with (
        pytest.raises(PermanentEngineError, match="model has 3 layers"),
        capture_activations(loaded, ["blocks.9.hook_resid_post"]),
    ):
        pass
