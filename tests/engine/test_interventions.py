"""Feature edits keep the SAE error term: checked against hand computations on a tiny model."""

import pytest
import torch

from interp_jobs.engine.analysis.interventions import (
    FeatureEdit,
    LensEdits,
    applied,
    feature_edit_fn,
    last_real_positions,
    mean_feature_activations,
    measure_effects,
    steering_edit,
    typical_norm,
)
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import capture_activations, replace_activation, run_to
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.engine.loading.models import load_model
from tests.factories import TINY_HOOK, save_random_lens, save_tiny_llama

NEXT_HOOK = "blocks.2.hook_resid_pre"  # reads exactly what blocks.1.hook_resid_post wrote
PROMPTS = [
    "How do I bake bread at home?",
    "Explain how tides work.",
    "Write a short poem about the sea.",
    "What is a prime number?",
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("llama")), "hf_dir")


@pytest.fixture(scope="module")
def lens(tmp_path_factory):
    return load_lens(save_random_lens(tmp_path_factory.mktemp("lens")))


def _logits(loaded, enc):
    with torch.inference_mode():
        return loaded.model(**enc, use_cache=False).logits


def _edited_logits(loaded, enc, lens, edits):
    with applied(loaded, [LensEdits(lens, tuple(edits))]):
        return _logits(loaded, enc)


def _active_feature(loaded, lens, enc) -> int:
    """A feature that is active somewhere on the prompts, so ablating it must change things."""
    x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [TINY_HOOK])[TINY_HOOK]
    return int(lens.encode(x).abs().sum((0, 1)).argmax())


def test_no_edit_leaves_logits_bit_identical(loaded, lens):
    enc = loaded.encode(PROMPTS, chat=True)
    clean = _logits(loaded, enc)
    assert torch.equal(_edited_logits(loaded, enc, lens, []), clean)
    # Adding 0 to a feature goes through the whole encode/decode path and must still be exact.
    assert torch.equal(_edited_logits(loaded, enc, lens, [FeatureEdit(3, "add", 0.0)]), clean)


def test_zero_ablation_moves_the_activation_by_minus_f_times_the_decoder_row(loaded, lens):
    enc = loaded.encode(PROMPTS, chat=True)
    i = _active_feature(loaded, lens, enc)
    x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [TINY_HOOK])[TINY_HOOK]
    manual = x + (0 - lens.encode(x)[..., i : i + 1]) * lens.W_dec[i]
    with torch.inference_mode(), applied(loaded, [LensEdits(lens, (FeatureEdit(i, "set"),))]):
        edited = run_to(loaded, enc["input_ids"], enc["attention_mask"], [NEXT_HOOK])[NEXT_HOOK]
    assert not torch.allclose(edited, x)
    torch.testing.assert_close(edited, manual, rtol=1e-5, atol=1e-6)


def test_ablated_model_output_equals_a_manual_splice_of_the_formula(loaded, lens):
    enc = loaded.encode(PROMPTS, chat=True)
    i = _active_feature(loaded, lens, enc)

    def manual(x):
        return x - lens.encode(x)[..., i : i + 1] * lens.W_dec[i]

    with torch.inference_mode(), replace_activation(loaded, TINY_HOOK, manual):
        expected = loaded.model(**enc, use_cache=False).logits
    got = _edited_logits(loaded, enc, lens, [FeatureEdit(i, "set", 0.0)])
    assert not torch.allclose(got, _logits(loaded, enc))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_edit_changes_only_the_edited_directions(lens):
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    fn = feature_edit_fn(lens, [FeatureEdit(4, "set", 2.5), FeatureEdit(9, "add", -1.0)])
    f = lens.encode(x)
    expected = x + (2.5 - f[..., 4:5]) * lens.W_dec[4] + (-1.0) * lens.W_dec[9]
    torch.testing.assert_close(fn(x), expected, rtol=1e-5, atol=1e-5)


def test_steering_raises_the_projection_on_the_decoder_direction_by_the_requested_length(
    loaded, lens
):
    enc = loaded.encode(PROMPTS, chat=True)
    unit = lens.W_dec[7] / lens.W_dec[7].norm()
    edit = steering_edit(lens, 7, coefficient=0.5, norm=4.0)
    with torch.inference_mode():
        before = run_to(loaded, enc["input_ids"], enc["attention_mask"], [NEXT_HOOK])[NEXT_HOOK]
        with applied(loaded, [LensEdits(lens, (edit,))]):
            after = run_to(loaded, enc["input_ids"], enc["attention_mask"], [NEXT_HOOK])[NEXT_HOOK]
    rise = (after - before) @ unit
    torch.testing.assert_close(rise, torch.full_like(rise, 2.0), rtol=1e-4, atol=1e-4)


def test_kl_is_zero_without_an_edit_and_positive_with_one(loaded, lens):
    enc = loaded.encode(PROMPTS, chat=True)
    i = _active_feature(loaded, lens, enc)
    none = measure_effects(loaded, PROMPTS, [LensEdits(lens, ())], [5, 6])
    ablated = measure_effects(loaded, PROMPTS, [LensEdits(lens, (FeatureEdit(i, "set"),))], [5, 6])
    assert all(e.kl_answer_start == 0.0 and e.kl_all_positions == 0.0 for e in none)
    assert all(e.refusal_prob_before == e.refusal_prob_after for e in none)
    assert all(e.kl_all_positions > 0 for e in ablated)


def test_refusal_probability_equals_a_manual_softmax_sum(loaded, lens):
    ids = [5, 17, 40]
    edit = (FeatureEdit(2, "set", 3.0),)
    effects = measure_effects(loaded, PROMPTS, [LensEdits(lens, edit)], ids, batch_size=3)
    for prompt, effect in zip(PROMPTS, effects, strict=True):
        enc = loaded.encode(prompt, chat=True)  # one prompt: no padding at all
        probs = torch.softmax(_logits(loaded, enc)[0, -1].double(), -1)
        edited = torch.softmax(_edited_logits(loaded, enc, lens, edit)[0, -1].double(), -1)
        assert effect.refusal_prob_before == pytest.approx(float(probs[ids].sum()), rel=1e-4)
        assert effect.refusal_prob_after == pytest.approx(float(edited[ids].sum()), rel=1e-4)
        log_p, log_q = probs.log(), edited.log()
        kl = float((probs * (log_p - log_q)).sum())
        assert effect.kl_answer_start == pytest.approx(kl, rel=1e-3, abs=1e-7)


def test_effects_do_not_depend_on_how_prompts_are_batched(loaded, lens):
    plan = [LensEdits(lens, (FeatureEdit(2, "set", 3.0),))]
    one = measure_effects(loaded, PROMPTS, plan, [5, 6], batch_size=1)
    four = measure_effects(loaded, PROMPTS, plan, [5, 6], batch_size=4)
    for a, b in zip(one, four, strict=True):
        assert a.refusal_prob_after == pytest.approx(b.refusal_prob_after, rel=1e-4)
        assert a.kl_all_positions == pytest.approx(b.kl_all_positions, rel=1e-3, abs=1e-7)


def test_mean_activation_is_the_token_mean_over_the_prompts(loaded, lens):
    means = mean_feature_activations(loaded, lens, PROMPTS, batch_size=3)
    per_token = []
    for prompt in PROMPTS:
        enc = loaded.encode(prompt, chat=True)
        x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [TINY_HOOK])[TINY_HOOK]
        per_token.append(lens.encode(x)[0])
    torch.testing.assert_close(means, torch.cat(per_token).mean(0), rtol=1e-4, atol=1e-5)


def test_typical_norm_is_the_median_token_norm(loaded):
    norms = []
    for prompt in PROMPTS:
        enc = loaded.encode(prompt, chat=True)
        x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [TINY_HOOK])[TINY_HOOK]
        norms.append(x[0].norm(dim=-1))
    expected = float(torch.cat(norms).median())
    assert typical_norm(loaded, TINY_HOOK, PROMPTS, batch_size=3) == pytest.approx(
        expected, rel=1e-5
    )


def test_hooks_are_removed_after_the_edit_even_on_error(loaded, lens):
    enc = loaded.encode(PROMPTS, chat=True)
    clean = _logits(loaded, enc)
    with pytest.raises(RuntimeError), applied(loaded, [LensEdits(lens, (FeatureEdit(1, "set"),))]):
        raise RuntimeError("check failed half-way")
    assert torch.equal(_logits(loaded, enc), clean)
    with capture_activations(loaded, [TINY_HOOK], stop_after_deepest=False) as store:
        _logits(loaded, enc)
    assert TINY_HOOK in store  # hook machinery still works after removal


def test_a_feature_index_outside_the_lens_is_refused(lens):
    with pytest.raises(PermanentEngineError, match="64 features"):
        feature_edit_fn(lens, [FeatureEdit(64, "set")])
    with pytest.raises(PermanentEngineError, match="Unknown feature edit"):
        feature_edit_fn(lens, [FeatureEdit(1, "multiply", 2.0)])


def test_last_real_position_handles_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert last_real_positions(right).tolist() == [2, 3]
    assert last_real_positions(left).tolist() == [3, 3]
