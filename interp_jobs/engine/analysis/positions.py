"""Which token positions a check leaves out, and why: one rule for every check.

Rule ``assay-positions-v1`` has three parts. Each check says in its evidence which parts it
applies (``PositionRule``) and lists the positions they removed (``PositionPlan.describe``).

1. **Attention sink** (``sink_positions``, default 1): the first position(s). Models park an
   attention sink on the first token whatever it is: in SmolLM2-135M the MLPs of layers 1 and
   2 write 15-40 times their usual output norm there and the residual norm reaches ~22,700
   against ~160 elsewhere. Lenses are not trained there, one such vector outweighs hundreds of
   ordinary tokens in any variance, and a feature "firing" there says nothing about the text.
   circuit-tracer treats it the same way: ``ReplacementModel.zero_positions`` (``slice(0, 1)``;
   ``slice(0, 4)`` for Gemma-3 instruct models) zeroes the features and the error node there,
   so the sink's MLP output is a constant of the frozen context, not a node. When the prompt
   does not start with a special token, circuit-tracer prepends one (BOS) to hold the sink.
2. **Secondary sinks** (``sink_norm_ratio``, data-dependent): any other position whose
   activation norm at the measured hook exceeds that many times the median (a row that starts
   with a blank line can grow a second sink). Off unless a check asks for it.
3. **Template scaffolding** (``template``): tokens the chat template wrote rather than the
   prompt's author (special tokens, role headers, the default system prompt, the generation
   prompt). They are the same for every prompt, so they carry no contrast between prompts.
   ``"exclude"`` drops them, ``"mark"`` keeps them but names them (circuit_trace: they take
   part in the computation, so they stay in the graph, but no validation intervention targets
   them), ``"keep"`` ignores the distinction.

API: ``PositionRule`` (what a check applies), ``template_positions`` (which positions of a
rendered chat prompt are scaffolding), ``plan_positions`` (the plan for one sequence),
``norm_sinks`` (part 2 on a batch of activations), ``sink_mask`` (part 2 inside a hook, which
sees activations but not positions: edits leave such positions alone). Adopted by
circuit_trace and sae_fidelity; the activation-reading checks adopt it next.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RULE_NAME = "assay-positions-v1"
# A hook sees activations, not positions, so an edit recognises a sink by its norm: in SmolLM2
# the first token's residual norm is ~100x the others'. Lenses are not trained there and
# circuit-tracer leaves its features alone too (zero_positions), so edits never touch it.
SINK_NORM_RATIO = 10.0
SINK = "attention_sink"
SECONDARY_SINK = "secondary_sink"
TEMPLATE = "template"
WHY = {
    SINK: (
        "the first position holds the attention sink (residual norm ~100x the other tokens'); "
        "lenses are not trained there and circuit-tracer zeroes its features and error "
        "(zero_positions)"
    ),
    SECONDARY_SINK: "activation norm above sink_norm_ratio times the median: a second sink",
    TEMPLATE: "written by the chat template (special tokens, roles, system prompt), not the prompt",
}


@dataclass(frozen=True)
class PositionRule:
    sink_positions: int = 1
    sink_norm_ratio: float | None = None
    template: Literal["exclude", "mark", "keep"] = "keep"

    def describe(self) -> dict[str, Any]:
        return {
            "rule": RULE_NAME,
            "sink_positions": self.sink_positions,
            "sink_norm_ratio": self.sink_norm_ratio,
            "template": self.template,
            "why": WHY,
        }


@dataclass(frozen=True)
class PositionPlan:
    n_positions: int
    rule: PositionRule
    excluded: dict[int, str] = field(default_factory=dict)
    marked: dict[int, str] = field(default_factory=dict)

    @property
    def kept(self) -> list[int]:
        return [p for p in range(self.n_positions) if p not in self.excluded]

    @property
    def content(self) -> list[int]:
        """Kept positions that are not marked either: the prompt's own tokens."""
        return [p for p in self.kept if p not in self.marked]

    def describe(self) -> dict[str, Any]:
        return {
            **self.rule.describe(),
            "n_positions": self.n_positions,
            "excluded": [{"position": p, "reason": r} for p, r in sorted(self.excluded.items())],
            "marked": [{"position": p, "reason": r} for p, r in sorted(self.marked.items())],
        }


def plan_positions(
    n_positions: int,
    rule: PositionRule,
    *,
    template: Iterable[int] = (),
    norms: Sequence[float] | None = None,
) -> PositionPlan:
    """Apply ``rule`` to one sequence of ``n_positions`` tokens.

    ``template``: the positions the chat template wrote (see ``template_positions``);
    ``norms``: the activation norm per position, needed only for secondary sinks.
    """
    excluded = {p: SINK for p in range(min(rule.sink_positions, n_positions))}
    if rule.sink_norm_ratio is not None and norms is not None:
        for p in norm_sinks([list(norms)], rule.sink_norm_ratio)[0]:
            excluded.setdefault(p, SECONDARY_SINK)
    marked: dict[int, str] = {}
    for p in sorted(set(template)):
        if p in excluded or not 0 <= p < n_positions:
            continue
        if rule.template == "exclude":
            excluded[p] = TEMPLATE
        elif rule.template == "mark":
            marked[p] = TEMPLATE
    return PositionPlan(n_positions, rule, excluded, marked)


def norm_sinks(norms: Sequence[Sequence[float]], ratio: float) -> list[list[int]]:
    """Per sequence, the positions whose norm exceeds ``ratio`` times the median over all."""
    flat = sorted(v for row in norms for v in row)
    if not flat:
        return [[] for _ in norms]
    median = flat[(len(flat) - 1) // 2]
    return [[p for p, v in enumerate(row) if v > ratio * median] for row in norms]


def sink_mask(x, ratio: float = SINK_NORM_RATIO):
    """1 where a position may be edited, 0 at attention sinks (norm > ``ratio`` x the median
    norm of the activations in ``x``), shaped to broadcast over the last dimension."""
    norms = x.detach().float().norm(dim=-1)
    median = norms.flatten().median()
    return (norms <= ratio * median).unsqueeze(-1).to(x.dtype)


def template_positions(tokenizer, rendered: str, ids: Sequence[int], content: Sequence[str]):
    """Positions of ``ids`` (the tokens of ``rendered``) that lie outside every ``content`` span.

    ``content`` are the texts the prompt's author wrote (each found in ``rendered`` in order);
    every other token was written by the template. Uses the tokenizer's offset mapping;
    tokenizers without one fall back to "special tokens are scaffolding".
    """
    spans = _content_spans(rendered, content)
    try:
        encoded = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        offsets = encoded["offset_mapping"]
    except (NotImplementedError, TypeError, ValueError, KeyError):
        offsets = None
    if offsets is None or list(encoded["input_ids"]) != list(ids):
        special = set(getattr(tokenizer, "all_special_ids", ()))
        return {p for p, token in enumerate(ids) if token in special}
    return {
        p
        for p, (start, end) in enumerate(offsets)
        if not any(start < s_end and end > s_start for s_start, s_end in spans)
    }


def _content_spans(rendered: str, content: Sequence[str]) -> list[tuple[int, int]]:
    spans, cursor = [], 0
    for text in content:
        start = rendered.find(text, cursor) if text else -1
        if start < 0:
            continue
        spans.append((start, start + len(text)))
        cursor = start + len(text)
    return spans
