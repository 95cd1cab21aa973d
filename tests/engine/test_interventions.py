"""Feature edits keep the SAE error term: checked against hand computations on a tiny model."""

import pytest
import torch

from interp_jobs.engine.analysis.interventions import (
    FeatureEdit,
    LensEdits,
    applied,
    feature_edit_fn,
    last_real_positions,
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


# ---- refusal vs compliance log-odds over whole continuations ---------------------------------

CONTINUATIONS = ["I can't help with that.", "Sorry, no.", "Sure! Here's how:", "Step 1: first"]
REFUSAL_FLAGS = [True, True, False, False]


def _manual_logprob(loaded, prompt: str, continuation: str) -> float:
    """log P(continuation | templated prompt) from one unpadded forward pass of the whole text."""
    enc = loaded.encode(prompt, chat=True)
    ids = loaded.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    full = torch.cat([enc["input_ids"], torch.tensor([ids])], dim=1)
    with torch.inference_mode():
        log_probs = torch.log_softmax(loaded.model(input_ids=full).logits[0].double(), -1)
    start = enc["input_ids"].shape[1]
    return sum(float(log_probs[start - 1 + i, token]) for i, token in enumerate(ids))


def test_continuation_log_probs_equal_a_full_forward_pass_of_each_continuation(loaded):
    from interp_jobs.engine.analysis.interventions import score_conditions

    scores = score_conditions(loaded, PROMPTS, CONTINUATIONS, REFUSAL_FLAGS, {}, batch_size=3)
    for prompt, row in zip(PROMPTS, scores["none"], strict=True):
        expected = [_manual_logprob(loaded, prompt, c) for c in CONTINUATIONS]
        assert row.logprobs == pytest.approx(expected, abs=2e-3)
        refusal = torch.logsumexp(torch.tensor(expected[:2]), 0)
        compliance = torch.logsumexp(torch.tensor(expected[2:]), 0)
        assert row.log_odds == pytest.approx(float(refusal - compliance), abs=2e-3)
        assert row.kl_answer_start == 0
        assert row.kl_all_positions == 0


def test_continuation_scores_do_not_depend_on_how_prompts_are_batched(loaded, lens):
    from interp_jobs.engine.analysis.interventions import score_conditions

    plan = [LensEdits(lens, (FeatureEdit(3, "set", 0.0),))]
    conditions = {"ablate": lambda: applied(loaded, plan)}
    one = score_conditions(loaded, PROMPTS, CONTINUATIONS, REFUSAL_FLAGS, conditions, batch_size=1)
    all_ = score_conditions(loaded, PROMPTS, CONTINUATIONS, REFUSAL_FLAGS, conditions, batch_size=4)
    for name in ("none", "ablate"):
        for a, b in zip(one[name], all_[name], strict=True):
            assert a.log_odds == pytest.approx(b.log_odds, abs=2e-3)
            assert a.kl_answer_start == pytest.approx(b.kl_answer_start, abs=1e-4)
    assert any(r.kl_answer_start > 0 for r in all_["ablate"])


def test_log_odds_needs_refusal_and_compliance_continuations(loaded):
    from interp_jobs.engine.analysis.interventions import score_conditions

    with pytest.raises(PermanentEngineError, match="refusal and compliance"):
        score_conditions(loaded, PROMPTS, CONTINUATIONS[:2], [True, True], {})


# ---- attention sinks are never edited ---------------------------------------------------------


def test_a_position_with_a_sink_sized_norm_is_left_unedited(lens):
    from interp_jobs.engine.analysis.positions import sink_mask

    x = torch.randn(2, 5, lens.cfg.d_in)
    x[0, 0] *= 1000  # an attention sink
    keep = sink_mask(x)
    assert keep[0, 0, 0] == 0
    assert keep[..., 0].sum() == 9
    edit = feature_edit_fn(lens, [FeatureEdit(3, "set", 0.0)])
    edited = edit(x)
    assert torch.equal(edited[0, 0], x[0, 0])
    assert not torch.equal(edited[1, 2], x[1, 2])


# ---- the refusal direction (positive control) -------------------------------------------------


def test_the_refusal_direction_is_the_difference_of_last_token_means(loaded):
    from interp_jobs.engine.analysis.directions import refusal_direction

    harmful, harmless = PROMPTS[:2], PROMPTS[2:]
    direction = refusal_direction(loaded, TINY_HOOK, harmful, harmless, batch_size=1)

    def last_token_mean(prompts):
        rows = []
        for prompt in prompts:
            enc = loaded.encode(prompt, chat=True)
            acts = run_to(loaded, enc["input_ids"], enc["attention_mask"], [TINY_HOOK])
            rows.append(acts[TINY_HOOK][0, -1])
        return torch.stack(rows).mean(0)

    expected = last_token_mean(harmful) - last_token_mean(harmless)
    assert torch.allclose(direction.vector, expected, atol=1e-5)
    assert direction.describe()["n_harmful"] == 2


def test_adding_the_direction_shifts_the_hook_by_exactly_c_times_r(loaded):
    from interp_jobs.engine.analysis.directions import Direction, adding

    vector = torch.randn(loaded.d_model)
    direction = Direction(TINY_HOOK, vector, 1, 1)
    enc = loaded.encode(PROMPTS[0], chat=True)
    before = run_to(loaded, enc["input_ids"], enc["attention_mask"], [NEXT_HOOK])[NEXT_HOOK]
    with adding(loaded, direction, 0.5):
        after = run_to(loaded, enc["input_ids"], enc["attention_mask"], [NEXT_HOOK])[NEXT_HOOK]
    shift = after - before
    assert torch.allclose(shift, (0.5 * vector).expand_as(shift), atol=1e-4)


def test_ablating_the_direction_removes_it_from_the_residual_stream_at_every_layer(loaded):
    from interp_jobs.engine.analysis.directions import Direction, ablating

    vector = torch.randn(loaded.d_model)
    unit = vector / vector.norm()
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(loaded.n_layers)]
    enc = loaded.encode(PROMPTS[1], chat=True)
    with (
        ablating(loaded, Direction(TINY_HOOK, vector, 1, 1)),
        capture_activations(loaded, hooks, stop_after_deepest=False) as acts,
        torch.inference_mode(),
    ):
        loaded.model(**enc)
    for hook in hooks:
        assert (acts[hook] @ unit).abs().max() < 1e-4


def test_the_first_token_refusal_score_is_the_log_odds_of_the_first_tokens(loaded, lens):
    """Arditi et al.'s selection score, checked against one unpadded forward pass per prompt."""
    from interp_jobs.engine.analysis.interventions import first_token_log_odds, first_tokens

    # words the tiny word-level tokenizer knows, so the two kinds open with different tokens
    continuations = ["the cat sat", "the dog", "paris is", "hello hi"]
    flags = [True, True, False, False]
    plan = [LensEdits(lens, (FeatureEdit(3, "set", 0.0),))]
    conditions = {"ablate": lambda: applied(loaded, plan)}
    scores = first_token_log_odds(loaded, PROMPTS, continuations, flags, conditions, batch_size=3)
    refusal, compliance = first_tokens(loaded.tokenizer, continuations, flags)
    assert not set(refusal) & set(compliance)
    for prompt, got in zip(PROMPTS, scores["none"], strict=True):
        enc = loaded.encode(prompt, chat=True)
        with torch.inference_mode():
            lp = torch.log_softmax(loaded.model(input_ids=enc["input_ids"]).logits[0, -1], -1)
        expected = torch.logsumexp(lp[refusal], 0) - torch.logsumexp(lp[compliance], 0)
        assert got == pytest.approx(float(expected), abs=2e-3)
    assert scores["ablate"] != pytest.approx(scores["none"], abs=1e-6)


def test_a_first_token_shared_by_refusal_and_compliance_counts_for_neither(loaded):
    from interp_jobs.engine.analysis.interventions import first_tokens

    texts = ["the cat", "hello hi", "the dog", "paris is"]
    refusal, compliance = first_tokens(loaded.tokenizer, texts, [True, True, False, False])
    ids = [loaded.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in texts]
    assert ids[0] not in refusal
    assert ids[0] not in compliance
    assert refusal == [ids[1]]
    assert compliance == [ids[3]]
    with pytest.raises(PermanentEngineError, match="first token"):
        first_tokens(loaded.tokenizer, [texts[0], texts[2]], [True, False])
