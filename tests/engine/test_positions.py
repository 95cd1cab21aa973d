"""The shared position rule: the sink, secondary sinks and template scaffolding."""

from interp_jobs.engine.analysis.positions import (
    SECONDARY_SINK,
    SINK,
    TEMPLATE,
    PositionRule,
    norm_sinks,
    plan_positions,
    sink_mask,
    template_positions,
)
from tests.factories import CHAT_TEMPLATE, build_tokenizer


def test_position_zero_is_always_the_sink_and_says_why():
    plan = plan_positions(5, PositionRule())
    assert plan.excluded == {0: SINK}
    assert plan.kept == [1, 2, 3, 4]
    described = plan.describe()
    assert described["rule"] == "assay-positions-v1"
    assert described["excluded"] == [{"position": 0, "reason": SINK}]
    assert "attention sink" in described["why"][SINK]


def test_gemma_style_rules_can_exclude_more_leading_positions():
    assert plan_positions(6, PositionRule(sink_positions=4)).kept == [4, 5]


def test_template_positions_are_marked_or_excluded_as_the_rule_says():
    template = {0, 1, 4}
    marked = plan_positions(6, PositionRule(template="mark"), template=template)
    assert marked.excluded == {0: SINK}
    assert marked.marked == {1: TEMPLATE, 4: TEMPLATE}
    assert marked.content == [2, 3, 5]
    excluded = plan_positions(6, PositionRule(template="exclude"), template=template)
    assert excluded.kept == [2, 3, 5]
    assert plan_positions(6, PositionRule(), template=template).kept == [1, 2, 3, 4, 5]


def test_secondary_sinks_are_found_by_their_norm():
    norms = [100.0, 1.0, 1.2, 0.9, 50.0]
    assert norm_sinks([norms], 10.0) == [[0, 4]]
    plan = plan_positions(5, PositionRule(sink_norm_ratio=10.0), norms=norms)
    assert plan.excluded == {0: SINK, 4: SECONDARY_SINK}


def test_template_positions_are_the_tokens_outside_the_users_text():
    tokenizer = build_tokenizer(chat_template=CHAT_TEMPLATE)
    user = "what is the capital of france"
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    template = template_positions(tokenizer, rendered, ids, [user])
    pieces = tokenizer.convert_ids_to_tokens(ids)
    assert [pieces[p] for p in sorted(set(range(len(ids))) - template)] == user.split()
    assert len(template) == len(ids) - len(user.split())


def test_an_edit_mask_leaves_a_sink_sized_activation_alone():
    import torch

    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    x[0, 0] *= 1000  # an attention sink: its norm dwarfs the median
    keep = sink_mask(x)
    assert keep.shape == (2, 5, 1)
    assert keep[0, 0, 0] == 0
    assert keep.sum() == 9
