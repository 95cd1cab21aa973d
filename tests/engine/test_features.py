"""Feature activations over prompt sets: which tokens count, batching, sliced encoding, and the
contrastive statistics, checked against brute-force computations and a planted feature.

The planted model writes a known direction into the embedding of every token that occurs in the
weapons prompts but in no neutral prompt; the planted lens has one feature reading exactly that
direction. That feature must fire on every weapons prompt and on no neutral one, so its AUROC is
1 and it must rank first; random features of the same lens must not.
"""

import pytest
import torch

from interp_jobs.engine.analysis import features
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.lenses import load_lens
from interp_jobs.engine.loading.models import load_model
from interp_jobs.probes import load_probe_set
from tests.factories import (
    PLANTED_AXIS,
    PLANTED_FEATURE,
    TINY_D_MODEL,
    axis_only_tokens,
    brute_force_stats,
    save_planted_lens,
    save_planted_model,
    save_random_lens,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("planted-model")
    direction = save_planted_model(model_dir)
    lens_dir = save_planted_lens(tmp_path_factory.mktemp("planted-lens"), direction)
    return load_model(model_dir, "hf_dir"), load_lens(lens_dir)


@pytest.fixture(scope="module")
def groups():
    probes = load_probe_set()
    return (
        [p.prompt for p in probes.for_axis(PLANTED_AXIS)],
        [p.prompt for p in probes.neutral_prompts],
    )


# --- which tokens count -----------------------------------------------------------------------


def test_only_the_user_text_tokens_count(planted, groups):
    loaded, _ = planted
    texts = groups[0][:6]
    tokens = features.tokenize_prompts(loaded, texts)
    assert tokens.n_whole_prompt == 0
    for row, text in enumerate(texts):
        counted = tokens.input_ids[row][tokens.counted[row]].tolist()
        assert loaded.tokenizer.decode(counted).strip() == text
    # The template's markers and the padding are never counted.
    assert not tokens.counted[~tokens.attention_mask.bool()].any()
    assert (tokens.counted.sum(dim=1) < tokens.attention_mask.sum(dim=1)).all()


def test_user_text_that_the_template_also_contains_is_found_in_the_user_turn(planted):
    loaded, _ = planted
    tokens = features.tokenize_prompts(loaded, ["assistant"])
    counted = tokens.input_ids[0][tokens.counted[0]].tolist()
    assert loaded.tokenizer.decode(counted).strip() == "assistant"
    first = int(tokens.counted[0].nonzero()[0])
    assert loaded.tokenizer.decode(tokens.input_ids[0][:first].tolist()).strip() == "<|user|>"


def test_plain_prompts_count_every_text_token(planted):
    loaded, _ = planted
    tokens = features.tokenize_prompts(loaded, ["How do fireworks get their colours?"], chat=False)
    assert tokens.counted.sum() == tokens.attention_mask.sum()


def test_the_position_rule_leaves_out_the_attention_sink(planted):
    from interp_jobs.engine.analysis.positions import PositionRule

    loaded, _ = planted
    text = ["How do fireworks get their colours?"]
    plain = features.tokenize_prompts(loaded, text, chat=False)
    ruled = features.tokenize_prompts(loaded, text, chat=False, positions=PositionRule())
    assert bool(plain.counted[0, 0])
    assert not bool(ruled.counted[0, 0])
    assert torch.equal(plain.counted[0, 1:], ruled.counted[0, 1:])
    # with a chat template position 0 is scaffolding already: the rule changes nothing
    chat = features.tokenize_prompts(loaded, text)
    chat_ruled = features.tokenize_prompts(loaded, text, positions=PositionRule(template="exclude"))
    assert torch.equal(chat.counted, chat_ruled.counted)


def test_an_empty_prompt_is_refused(planted):
    loaded, _ = planted
    with pytest.raises(PermanentEngineError, match="no tokens"):
        features.tokenize_prompts(loaded, ["How are you?", ""])


# --- per-prompt statistics ----------------------------------------------------------------------


def test_batched_statistics_equal_a_full_forward_per_prompt(planted, groups):
    loaded, lens = planted
    texts = groups[0][:4] + groups[1][:5]
    stats = features.prompt_feature_stats(loaded, lens, texts, batch_size=4)
    assert stats.max.shape == stats.mean.shape == (len(texts), lens.cfg.d_sae)
    for row, text in enumerate(texts):
        expected_max, expected_mean = brute_force_stats(loaded, lens, text)
        torch.testing.assert_close(stats.max[row], expected_max, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(stats.mean[row], expected_mean, atol=1e-5, rtol=1e-4)


def test_padding_and_batch_size_do_not_change_a_prompts_statistics(planted, groups):
    loaded, lens = planted
    texts = groups[0][:3] + groups[1][:4]
    one_by_one = features.prompt_feature_stats(
        loaded, lens, texts, [PLANTED_FEATURE, 3], batch_size=1
    )
    batched = features.prompt_feature_stats(loaded, lens, texts, [PLANTED_FEATURE, 3], batch_size=7)
    torch.testing.assert_close(one_by_one.max, batched.max, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(one_by_one.mean, batched.mean, atol=1e-5, rtol=1e-4)
    assert torch.equal(one_by_one.argmax, batched.argmax)


def test_forward_pass_stops_at_the_lens_hook(planted, groups):
    loaded, lens = planted
    calls = []
    later_block = loaded.model.model.layers[2]  # the lens reads block 1's output
    handle = later_block.register_forward_hook(lambda *args: calls.append(1))
    try:
        features.prompt_feature_stats(loaded, lens, groups[1][:3], [PLANTED_FEATURE])
        assert calls == []
        with torch.inference_mode():
            loaded.model(**loaded.encode(groups[1][0], chat=True))
        assert calls == [1]  # the hook itself works
    finally:
        handle.remove()


def test_out_of_range_features_are_refused(planted):
    loaded, lens = planted
    with pytest.raises(PermanentEngineError, match="not features of this lens"):
        features.prompt_feature_stats(loaded, lens, ["hello"], [0, lens.cfg.d_sae])


# --- sliced encoding --------------------------------------------------------------------------


def _jumprelu_lens():
    from sae_lens import SAE, saes
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(1)
    config = saes.JumpReLUSAEConfig(
        d_in=TINY_D_MODEL, d_sae=64, metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post")
    )
    lens = SAE.get_sae_class_for_architecture("jumprelu")(config)
    with torch.no_grad():
        for param in lens.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
        lens.threshold.abs_()
    return lens


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_encoding_only_some_features_equals_the_full_encode(architecture, tmp_path):
    if architecture == "jumprelu":
        lens = _jumprelu_lens()
    else:
        lens = load_lens(save_random_lens(tmp_path, architecture=architecture))
    x = torch.randn(3, 5, TINY_D_MODEL)
    indices = torch.tensor([5, 0, 63, 17])
    with torch.inference_mode():
        sliced = features.feature_encoder(lens, indices)(x)
        full = lens.encode(x)[..., indices]
    assert (full > 0).any()
    assert (full == 0).any()
    torch.testing.assert_close(sliced, full, atol=1e-6, rtol=1e-5)


def test_topk_lenses_are_not_sliced(tmp_path):
    lens = load_lens(save_random_lens(tmp_path, architecture="topk"))
    assert features._sliceable_kind(lens) is None
    assert features._sliceable_kind(_jumprelu_lens()) == "jumprelu"


# --- contrastive statistics -------------------------------------------------------------------


def _pairwise_auroc(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    diff = pos[:, None, :] - neg[None, :, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean(dim=(0, 1))


def test_auroc_with_ties_matches_the_pairwise_definition():
    generator = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 4, (23, 9), generator=generator).float()  # many ties
    neg = torch.randint(0, 3, (31, 9), generator=generator).float()
    torch.testing.assert_close(features.auroc(pos, neg), _pairwise_auroc(pos, neg))


def test_auroc_of_a_worked_example_with_ties():
    pos, neg = torch.tensor([[1.0], [1.0], [0.0]]), torch.tensor([[1.0], [0.0], [0.0]])
    assert features.auroc(pos, neg).item() == pytest.approx(6 / 9)


def test_a_feature_that_never_fires_has_auroc_one_half_and_no_effect():
    pos, neg = torch.zeros(5, 1), torch.zeros(7, 1)
    assert features.auroc(pos, neg).item() == 0.5
    assert features.cohens_d(pos, neg).item() == 0.0


def test_cohens_d_uses_the_pooled_standard_deviation():
    pos = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    neg = torch.tensor([[0.0], [1.0], [2.0]])
    pooled = ((3 * pos.var() + 2 * neg.var()) / 5).sqrt()
    expected = (pos.mean() - neg.mean()) / pooled
    assert features.cohens_d(pos, neg).item() == pytest.approx(expected.item())


def test_cohens_d_of_constant_but_different_groups_is_infinite_not_a_crash():
    d = features.cohens_d(torch.ones(4, 2), torch.tensor([[0.0, 1.0]] * 3))
    assert d[0].item() == float("inf")
    assert d[1].item() == 0.0


def test_contrasts_need_two_prompts_per_group():
    with pytest.raises(PermanentEngineError, match="at least 2"):
        features.auroc(torch.ones(1, 3), torch.ones(4, 3))


def test_planted_feature_separates_its_axis_from_neutral_and_ranks_first(planted, groups):
    loaded, lens = planted
    risk, neutral = groups
    stats = features.prompt_feature_stats(loaded, lens, risk + neutral, batch_size=16)
    pos, neg = stats.max[: len(risk)], stats.max[len(risk) :]
    auroc = features.auroc(pos, neg)
    assert auroc[PLANTED_FEATURE] == 1.0
    assert features.firing_rate(pos)[PLANTED_FEATURE] == 1.0
    assert features.firing_rate(neg)[PLANTED_FEATURE] == 0.0
    others = torch.cat([auroc[:PLANTED_FEATURE], auroc[PLANTED_FEATURE + 1 :]])
    assert others.max() < 0.9
    chance = features.best_auroc_chance(pos, neg, n_perm=1000, seed=0)
    assert chance["null_95th_percentile"] < 0.9
    assert chance["observed"] == 1.0
    assert chance["p_value"] == pytest.approx(1 / 1001)
    assert chance == features.best_auroc_chance(pos, neg, n_perm=1000, seed=0)


def test_top_contexts_show_the_peak_token_in_the_users_text(planted, groups):
    loaded, lens = planted
    risk = groups[0][:8]
    stats = features.prompt_feature_stats(loaded, lens, risk, [PLANTED_FEATURE, 3])
    contexts = features.top_contexts(stats, loaded.tokenizer, 0, range(len(risk)), k=3, window=4)
    assert len(contexts) == 3
    values = [c["activation"] for c in contexts]
    assert values == sorted(values, reverse=True)
    marked = set(axis_only_tokens(loaded.tokenizer, PLANTED_AXIS))
    for context in contexts:
        assert context["activation"] == pytest.approx(float(stats.max[context["row"], 0]))
        assert (
            loaded.tokenizer.convert_tokens_to_ids(loaded.tokenizer.tokenize(context["token"]))[0]
            in marked
        )
        text = context["left"] + context["token"] + context["right"]
        assert text.strip() in risk[context["row"]]


def test_subset_is_seeded_ordered_and_complete_when_not_capped():
    items = list(range(50))
    picked = features.subset(items, 10, seed=3)
    assert picked == sorted(picked)
    assert len(set(picked)) == 10
    assert picked == features.subset(items, 10, seed=3)
    assert picked != features.subset(items, 10, seed=4)
    assert features.subset(items, None, seed=3) == items
    assert features.subset(items, 80, seed=3) == items


# --- estimates with intervals: the same numbers as statistics.py, column by column -----------


@pytest.fixture(scope="module")
def scores():
    generator = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 4, (13, 4), generator=generator).float()
    neg = torch.randint(0, 3, (11, 4), generator=generator).float()
    pos[:, 3], neg[:, 3] = 0.0, 0.0  # a feature that never fires
    return pos, neg


def test_bootstrap_intervals_equal_statistics_column_by_column(scores):
    from interp_jobs.engine.analysis import statistics as st

    pos, neg = scores
    aurocs = features.auroc_estimates(pos, neg, n_boot=400, seed=7)
    effects = features.cohens_d_estimates(pos, neg, n_boot=400, seed=7)
    for column in range(pos.shape[1]):
        p, n = pos[:, column].numpy(), neg[:, column].numpy()
        expected_auroc = st.auroc_estimate(p, n, n_boot=400, seed=7)
        expected_d = st.cohens_d_estimate(p, n, n_boot=400, seed=7)
        for got, expected in ((aurocs[column], expected_auroc), (effects[column], expected_d)):
            assert (got.n, got.method) == (expected.n, expected.method) == (24, got.method)
            for field in ("value", "lower95", "upper95"):
                assert getattr(got, field) == pytest.approx(getattr(expected, field), abs=1e-12)
    assert (aurocs[3].value, aurocs[3].lower95, aurocs[3].upper95) == (0.5, 0.5, 0.5)


def test_permutation_p_values_equal_statistics_sampled_and_exact(scores):
    from interp_jobs.engine.analysis import statistics as st

    pos, neg = scores
    tests = features.auroc_p_values(pos, neg, n_perm=1000, seed=2)
    for column, got in enumerate(tests):
        expected = st.permutation_p_value(
            st.auroc, pos[:, column].numpy(), neg[:, column].numpy(), n_perm=1000, seed=2
        )
        assert got == pytest.approx(expected)
        assert got["n_permutations"] == 1000
    small = features.auroc_p_values(
        torch.tensor([[3.0], [2.0], [5.0]]), torch.tensor([[1.0], [2.0], [0.0]])
    )
    assert small[0]["exact"]
    assert small[0]["n_permutations"] == 20
    assert small[0]["p_value"] == pytest.approx(2 / 20)  # {5, 3, either of the two 2s}


def test_firing_rates_carry_wilson_intervals():
    from interp_jobs.engine.analysis.statistics import rate

    scores = torch.tensor([[0.0, 1.0], [0.5, 0.0], [0.0, 2.0], [0.0, 3.0]])
    got = features.rate_estimates(scores, threshold=0.0)
    assert got == [rate(1, 4), rate(3, 4)]
    assert got[0].lower95 == pytest.approx(0.0456, abs=1e-3)


def test_a_small_sample_best_auroc_is_not_better_than_chance():
    generator = torch.Generator().manual_seed(0)
    pos = torch.relu(torch.randn(20, 300, generator=generator))
    neg = torch.relu(torch.randn(20, 300, generator=generator))
    chance = features.best_auroc_chance(pos, neg, n_perm=1000, seed=1)
    assert chance["observed"] > 0.7  # some feature "separates" pure noise
    assert chance["p_value"] > 0.05
    assert chance["n_permutations"] == 1000
