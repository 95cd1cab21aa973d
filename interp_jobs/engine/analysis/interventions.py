"""Edit SAE features inside a running model and measure what the edit changes.

An edit never replaces the activation by the lens's reconstruction. At the lens's hook point
the activation ``x`` becomes ``x + (f_edited - f) @ W_dec`` where ``f = lens.encode(x)``: only
the edited features move, and everything the lens does not explain (its error term
``x - lens.decode(f)``) and every unedited feature is left exactly as it was. With no edit the
model's output is therefore bit-identical to the unmodified model's, so any measured change is
caused by the edit and not by splicing the lens in.

An edit is stated in feature space (``FeatureEdit``): "set" replaces the feature's activation
by a value at every position (zero ablation, mean ablation, clamping), "add" adds a value to it
(steering: adding ``c`` to feature ``i`` adds ``c * W_dec[i]`` to the residual stream).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp_jobs.engine.analysis.positions import sink_mask
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import EditFn, replace_activation, run_to
from interp_jobs.engine.loading.lenses import lens_hook_name

EDIT_OPS = ("set", "add")
# Positions whose activation norm exceeds this many times the median are attention sinks
# (rule assay-positions-v1, part 2: engine/analysis/positions.py) and are never edited: a hook
# sees activations, not positions, so the sink is recognised by its norm (in SmolLM2 the first
# token's residual norm is ~100x the others'). Lenses are not trained there and circuit-tracer
# leaves its features alone too (zero_positions).


@dataclass(frozen=True)
class FeatureEdit:
    index: int
    op: str  # "set": f_i := value; "add": f_i := f_i + value
    value: float = 0.0


@dataclass(frozen=True)
class LensEdits:
    """The edits applied at one lens's hook point."""

    lens: object  # a sae_lens SAE
    edits: tuple[FeatureEdit, ...]


@dataclass(frozen=True)
class PromptEffect:
    """What an edit did to the next-token distributions of one prompt."""

    refusal_prob_before: float  # P(first answer token opens a refusal), unmodified model
    refusal_prob_after: float  # the same with the edit applied
    kl_answer_start: float  # KL(before || after) of the first answer token's distribution
    kl_all_positions: float  # the same KL averaged over every position of the prompt


def check_edits(lens, edits: Sequence[FeatureEdit]) -> None:
    d_sae = lens.cfg.d_sae
    for edit in edits:
        if edit.op not in EDIT_OPS:
            raise PermanentEngineError(f"Unknown feature edit {edit.op!r}; use one of {EDIT_OPS}.")
        if not 0 <= edit.index < d_sae:
            raise PermanentEngineError(
                f"Feature index {edit.index} does not exist in a lens with {d_sae} features "
                f"(valid: 0 to {d_sae - 1})."
            )


def edited_features(f: torch.Tensor, edits: Sequence[FeatureEdit]) -> torch.Tensor:
    """The activations of the edited features after the edit, shape (..., len(edits))."""
    columns = []
    for position, edit in enumerate(edits):
        current = f[..., position]
        if edit.op == "set":
            columns.append(torch.full_like(current, edit.value))
        else:
            columns.append(current + edit.value)
    return torch.stack(columns, dim=-1) if columns else f[..., :0]


def feature_edit_fn(lens, edits: Sequence[FeatureEdit]) -> EditFn:
    """``x -> x + (f_edited - f) @ W_dec`` restricted to the edited features (error term kept)."""
    check_edits(lens, edits)
    indices = torch.tensor(
        [edit.index for edit in edits], dtype=torch.long, device=lens.W_dec.device
    )
    directions = lens.W_dec[indices]  # (k, d_in)

    def edit(x: torch.Tensor) -> torch.Tensor:
        f = lens.encode(x)[..., indices]
        delta = edited_features(f, edits) - f
        return x + ((delta @ directions) * sink_mask(x)).to(x.dtype)

    return edit


@contextmanager
def applied(loaded, plan: Sequence[LensEdits]) -> Iterator[None]:
    """Within the block every lens's edits are applied at its hook point (hooks removed after)."""
    with ExitStack() as stack:
        for item in plan:
            fn = feature_edit_fn(item.lens, item.edits)
            stack.enter_context(replace_activation(loaded, lens_hook_name(item.lens), fn))
        yield


def _batches(loaded, prompts: Sequence[str], batch_size: int, chat: bool) -> Iterator[dict]:
    for start in range(0, len(prompts), batch_size):
        yield loaded.encode(list(prompts[start : start + batch_size]), chat=chat)


def typical_norm(
    loaded, hook_name: str, prompts: Sequence[str], *, batch_size: int = 8, chat: bool = True
) -> float:
    """The median L2 norm of the activation at ``hook_name`` over the real tokens of ``prompts``.

    Steering coefficients are stated relative to it, so "coefficient 1" means a push as long
    as a typical residual vector whatever the model's scale. The median, not the mean, because
    a few positions (the first token, an attention sink) have norms many times the rest.
    """
    norms = []
    with torch.inference_mode():
        for enc in _batches(loaded, prompts, batch_size, chat):
            x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [hook_name])[hook_name]
            norms.append(x[enc["attention_mask"].bool()].float().norm(dim=-1).cpu())
    return float(torch.cat(norms).median())


def steering_edit(lens, index: int, coefficient: float, norm: float) -> FeatureEdit:
    """Adds ``coefficient * norm`` along the unit decoder direction of feature ``index``."""
    check_edits(lens, [FeatureEdit(index, "add")])
    length = float(lens.W_dec[index].float().norm())
    if length == 0.0:
        raise PermanentEngineError(f"Feature {index} has a zero decoder row; it cannot be steered.")
    return FeatureEdit(index, "add", coefficient * norm / length)


def last_real_positions(mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, whichever side the batch was padded on."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask).argmax(dim=1)


def _log_probs(loaded, enc: dict) -> torch.Tensor:
    logits = loaded.model(
        input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False
    ).logits
    return F.log_softmax(logits.float(), dim=-1)


def refusal_probability(log_probs: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
    """Next-token probability mass on ``token_ids`` (the first tokens of refusal openings)."""
    ids = torch.tensor(list(token_ids), dtype=torch.long, device=log_probs.device)
    return log_probs[..., ids].exp().sum(-1)


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension; exactly 0 where the distributions are identical."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _effects(
    before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor, refusal_ids: Sequence[int]
) -> list[PromptEffect]:
    rows = torch.arange(mask.shape[0], device=mask.device)
    last = last_real_positions(mask)
    kl = kl_divergence(before, after)  # (batch, positions)
    kl_mean = (kl * mask).sum(1) / mask.sum(1).clamp(min=1)
    p_before = refusal_probability(before[rows, last], refusal_ids)
    p_after = refusal_probability(after[rows, last], refusal_ids)
    return [
        PromptEffect(
            float(p_before[i]), float(p_after[i]), float(kl[i, last[i]]), float(kl_mean[i])
        )
        for i in range(mask.shape[0])
    ]


def measure_effects(
    loaded,
    prompts: Sequence[str],
    plan: Sequence[LensEdits],
    refusal_ids: Sequence[int],
    *,
    batch_size: int = 8,
    chat: bool = True,
    progress=None,
) -> list[PromptEffect]:
    """Next-token distributions of each prompt with and without the edit, compared.

    Both runs use the same batches, so padding and batch composition cannot differ between
    them; the unmodified and edited logits are compared position by position.
    """
    effects: list[PromptEffect] = []
    with torch.inference_mode():
        for enc in _batches(loaded, prompts, batch_size, chat):
            before = _log_probs(loaded, enc)
            with applied(loaded, plan):
                after = _log_probs(loaded, enc)
            effects += _effects(before, after, enc["attention_mask"], refusal_ids)
            if progress:
                progress(len(effects) / len(prompts))
    return effects


# --- refusal vs compliance log-odds over multi-token continuations ------------------------------
#
# A first-token mass on "I"/"Sorry" cannot tell a refusal from an answer that starts with "I",
# and on a model that never refuses it cannot move. Instead each prompt is scored by how likely
# the model is to continue its answer with each of a fixed set of whole refusal openings and
# whole compliance openings: log P(continuation | templated prompt), summed over the
# continuation's tokens. The refusal log-odds of a prompt is
#     logsumexp(refusal continuations) - logsumexp(compliance continuations),
# the log of how much more likely the model is to open with some refusal than with some
# compliance among these candidates. An edit's effect is its change, prompt by prompt.

Condition = Callable[[], AbstractContextManager]


def no_edit() -> AbstractContextManager:
    return nullcontext()


@dataclass(frozen=True)
class ContinuationScores:
    """One condition's scores for one prompt."""

    logprobs: tuple[float, ...]  # log P(continuation | prompt), one per continuation
    log_odds: float  # refusal vs compliance (see above)
    kl_answer_start: float  # KL(no edit || this condition), next-token at the answer start
    kl_all_positions: float  # the same, averaged over every prompt position


def continuation_token_ids(tokenizer, continuations: Sequence[str]) -> list[list[int]]:
    """Each continuation's tokens as the answer's first tokens (no special tokens added)."""
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in continuations]
    if any(not tokens for tokens in ids):
        raise PermanentEngineError("Every continuation must have at least one token.")
    return ids


def _left_padded(loaded, prompts: Sequence[str]) -> dict:
    tokenizer = loaded.tokenizer
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        return loaded.encode(list(prompts), chat=True)
    finally:
        tokenizer.padding_side = side


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def _continuation_batch(ids: list[list[int]], n_prompts: int, pad: int, device) -> tuple:
    width = max(len(tokens) for tokens in ids)
    tokens = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, item in enumerate(ids):
        tokens[row, : len(item)] = torch.tensor(item)
        mask[row, : len(item)] = 1
    return tokens.repeat(n_prompts, 1).to(device), mask.repeat(n_prompts, 1).to(device)


def _score_batch(loaded, enc: dict, cont_ids: list[list[int]]) -> tuple:
    """(prompt log-probs (B, T, V), continuation log-probs (B, K)) under the active hooks."""
    mask = enc["attention_mask"]
    n, k = mask.shape[0], len(cont_ids)
    out = loaded.model(
        input_ids=enc["input_ids"],
        attention_mask=mask,
        position_ids=_positions(mask),
        use_cache=True,
    )
    prompt_lp = F.log_softmax(out.logits.float(), dim=-1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(k)  # each prompt's cache, once per continuation
    pad = loaded.tokenizer.pad_token_id or 0
    tokens, cmask = _continuation_batch(cont_ids, n, pad, mask.device)
    full_mask = torch.cat([mask.repeat_interleave(k, 0), cmask], dim=1)
    start = mask.sum(1).repeat_interleave(k, 0).unsqueeze(1)
    positions = start + torch.arange(tokens.shape[1], device=mask.device).unsqueeze(0)
    logits = loaded.model(
        input_ids=tokens,
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        **{_cache_keyword(loaded.model): cache},
    ).logits.float()
    cont_lp = F.log_softmax(logits, dim=-1)
    first = prompt_lp[:, -1].repeat_interleave(k, 0)  # left padding: the answer starts here
    predicted = torch.cat([first.unsqueeze(1), cont_lp[:, :-1]], dim=1)
    picked = predicted.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * cmask
    return prompt_lp, picked.sum(-1).view(n, k)


def _cache_keyword(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); accept either."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def log_odds(logprobs: torch.Tensor, refusal: Sequence[bool]) -> torch.Tensor:
    """logsumexp over refusal continuations minus logsumexp over compliance ones, per row."""
    is_refusal = torch.tensor(list(refusal), dtype=torch.bool, device=logprobs.device)
    return torch.logsumexp(logprobs[:, is_refusal], -1) - torch.logsumexp(
        logprobs[:, ~is_refusal], -1
    )


def _none_first(conditions: dict[str, Condition]) -> dict[str, Condition]:
    """The unedited model first, so every batch's edits are compared with it."""
    return {"none": no_edit, **{k: v for k, v in conditions.items() if k != "none"}}


def _prompt_batches(loaded, prompts: Sequence[str], batch_size: int) -> Iterator[tuple]:
    """(offset, left-padded encoding) per batch of ``batch_size`` prompts."""
    for start in range(0, len(prompts), batch_size):
        yield start, _left_padded(loaded, prompts[start : start + batch_size])


def score_conditions(
    loaded,
    prompts: Sequence[str],
    continuations: Sequence[str],
    refusal: Sequence[bool],
    conditions: dict[str, Condition],
    *,
    batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
) -> dict[str, list[ContinuationScores]]:
    """Score every prompt's continuations under every condition (``"none"``, no edit, first).

    Batches are the outer loop, so each condition is compared with the unedited model on the
    same batch (same padding) and only one batch's distributions are held at a time.
    """
    if len(continuations) != len(refusal) or all(refusal) or not any(refusal):
        raise PermanentEngineError("Give refusal and compliance continuations, one flag each.")
    cont_ids = continuation_token_ids(loaded.tokenizer, continuations)
    ordered = _none_first(conditions)
    results: dict[str, list[ContinuationScores]] = {name: [] for name in ordered}
    with torch.inference_mode():
        for start, enc in _prompt_batches(loaded, prompts, batch_size):
            mask = enc["attention_mask"]
            base = None
            for name, condition in ordered.items():
                with condition():
                    prompt_lp, cont_lp = _score_batch(loaded, enc, cont_ids)
                base = prompt_lp if base is None else base
                results[name] += _rows(base, prompt_lp, cont_lp, mask, refusal)
            if progress:
                progress(min(start + batch_size, len(prompts)) / len(prompts))
    return results


def first_tokens(tokenizer, continuations: Sequence[str], refusal: Sequence[bool]) -> tuple:
    """The first tokens of the refusal and of the compliance continuations; a token that opens
    continuations of both kinds says nothing about which one follows, so it is left out."""
    ids = continuation_token_ids(tokenizer, continuations)
    opening = {t[0] for t, r in zip(ids, refusal, strict=True) if r}
    other = {t[0] for t, r in zip(ids, refusal, strict=True) if not r}
    ref, comp = sorted(opening - other), sorted(other - opening)
    if not ref or not comp:
        raise PermanentEngineError(
            "The refusal and compliance continuations share every first token; the "
            "first-token refusal score cannot tell them apart."
        )
    return ref, comp


def first_token_log_odds(
    loaded,
    prompts: Sequence[str],
    continuations: Sequence[str],
    refusal: Sequence[bool],
    conditions: dict[str, Condition],
    *,
    batch_size: int = 8,
) -> dict[str, list[float]]:
    """Arditi et al.'s refusal score under each condition (``"none"`` first): per prompt, the
    logsumexp of the answer's first-token log-probs over the refusal continuations' first
    tokens minus that over the compliance ones'. One forward pass per batch and condition with
    logits at the last position only, about a third of ``score_conditions``' cost: the
    direction search scores dozens of candidates, the evaluation then scores whole
    continuations."""
    ref, comp = first_tokens(loaded.tokenizer, continuations, refusal)
    ordered = _none_first(conditions)
    results: dict[str, list[float]] = {name: [] for name in ordered}
    with torch.inference_mode():
        for _, enc in _prompt_batches(loaded, prompts, batch_size):
            mask = enc["attention_mask"]
            for name, condition in ordered.items():
                with condition():
                    logits = loaded.model(
                        input_ids=enc["input_ids"],
                        attention_mask=mask,
                        position_ids=_positions(mask),
                        use_cache=False,
                        logits_to_keep=1,
                    ).logits[:, -1]
                lp = F.log_softmax(logits.float(), dim=-1)
                odds = torch.logsumexp(lp[:, ref], -1) - torch.logsumexp(lp[:, comp], -1)
                results[name] += [float(v) for v in odds]
    return results


def _rows(base, prompt_lp, cont_lp, mask, refusal) -> list[ContinuationScores]:
    kl = kl_divergence(base, prompt_lp)
    kl_mean = (kl * mask).sum(1) / mask.sum(1).clamp(min=1)
    odds = log_odds(cont_lp, refusal)
    return [
        ContinuationScores(
            tuple(float(v) for v in cont_lp[i]),
            float(odds[i]),
            float(kl[i, -1]),
            float(kl_mean[i]),
        )
        for i in range(mask.shape[0])
    ]
