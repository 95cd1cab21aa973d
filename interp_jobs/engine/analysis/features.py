"""Feature activations of a lens over prompt sets, and contrastive statistics between groups.

Which tokens count: only the tokens of the user's text. Prompts are wrapped in the model's chat
template (as the model sees them in use), but the template's scaffolding (system prompt, role
markers, generation prompt) and padding are excluded from every statistic: the scaffolding is
the same for every prompt, so a feature firing there says nothing about the request. A token
counts when its character span overlaps the user's text, so a token that merges the space or
newline before the text with its first word counts. Where the user's text cannot be located in
the templated prompt (a template that rewrites the text) or the tokenizer gives no character
offsets, all of that prompt's non-special tokens count, and ``n_whole_prompt`` says for how
many prompts that happened.

Per prompt and feature the statistics are the maximum and the mean activation over the counted
tokens; the maximum is the per-prompt score that firing rates, AUROC and effect sizes use.

Cost: the forward pass stops at the lens's hook point (``hooks.run_to``), prompts are batched
by length so little padding is computed, and when only some features are needed only their
encoder columns are computed (where the lens architecture allows it).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from interp_jobs.engine.analysis.positions import PositionRule, plan_positions
from interp_jobs.engine.analysis.statistics import Estimate
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import run_to
from interp_jobs.engine.loading.lenses import lens_hook_name

# A string no chat template contains, used to find where a template puts the user's text.
_SENTINEL = "\ue000assay-user-text\ue000"


@dataclass(frozen=True)
class TokenizedPrompts:
    input_ids: torch.Tensor  # [P, T] right-padded, on CPU
    attention_mask: torch.Tensor  # [P, T]
    counted: torch.Tensor  # [P, T] bool: the tokens statistics are taken over
    n_whole_prompt: int  # prompts whose user text could not be located (all tokens count)

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)


@dataclass(frozen=True)
class PromptFeatureStats:
    feature_indices: torch.Tensor  # [K] lens feature index of each column
    max: torch.Tensor  # [P, K] float32: max activation over the counted tokens
    mean: torch.Tensor  # [P, K] float32: mean activation over the counted tokens
    argmax: torch.Tensor  # [P, K] position (in input_ids) of the max
    tokens: TokenizedPrompts

    @property
    def n_tokens(self) -> torch.Tensor:
        return self.tokens.counted.sum(dim=1)


def subset(items: Sequence, n: int | None, seed: int) -> list:
    """A deterministic subset of ``n`` items, in their original order (all when n is None).

    The rule every probe-based check uses, so a policy's ``n_prompts`` and ``seed`` always
    pick the same prompts: ``random.Random(seed).sample`` over positions, then sorted.
    """
    if n is None or n >= len(items):
        return list(items)
    picked = sorted(random.Random(seed).sample(range(len(items)), n))  # noqa: S311 - seeded sampling, not cryptography
    return [items[i] for i in picked]


# --- tokenization: which tokens count ------------------------------------------------------


def tokenize_prompts(
    loaded, texts: Sequence[str], *, chat: bool = True, positions: PositionRule | None = None
) -> TokenizedPrompts:
    """Tokenize like ``loaded.encode`` (right-padded) and mark the tokens of the user's text.

    ``positions`` (the shared rule of engine/analysis/positions.py) also leaves out the
    positions it excludes, e.g. the attention sink at position 0 even where it is user text
    (a plain prompt without BOS); None keeps only the user-text rule."""
    if not texts:
        raise PermanentEngineError("No prompts were given; a probe set must not be empty.")
    wrapped = chat and loaded.has_chat_template
    full = [loaded.chat_prompt(text) for text in texts] if wrapped else list(texts)
    spans, n_whole = _user_spans(loaded, texts, full, wrapped)
    enc, offsets = _tokenize(loaded.tokenizer, full, add_special=not wrapped)
    attention = enc["attention_mask"].bool()
    if offsets is None:
        counted, n_whole = attention, len(texts)
    else:
        counted = _overlaps(offsets, torch.tensor(spans, dtype=offsets.dtype)) & attention
    if positions is not None:
        counted = counted & ~_excluded(positions, attention)
    empty = (counted.sum(dim=1) == 0).nonzero().flatten().tolist()
    if empty:
        raise PermanentEngineError(
            f"Prompt(s) at position {empty} have no tokens to measure; remove empty prompts."
        )
    return TokenizedPrompts(enc["input_ids"], enc["attention_mask"], counted, n_whole)


def _excluded(rule: PositionRule, attention: torch.Tensor) -> torch.Tensor:
    """[P, T] True where the position rule excludes a position (right-padded rows)."""
    excluded = torch.zeros_like(attention)
    for row, length in enumerate(attention.sum(dim=1).tolist()):
        for position in plan_positions(int(length), rule).excluded:
            excluded[row, position] = True
    return excluded


def _user_spans(loaded, texts, full, wrapped) -> tuple[list[tuple[int, int]], int]:
    """Character span of the user's text inside each templated prompt."""
    if not wrapped:
        return [(0, len(text)) for text in full], 0
    prefix, suffix = _template_frame(loaded)
    spans, n_whole = [], 0
    for text, whole in zip(texts, full, strict=True):
        exact = prefix is not None and whole == prefix + text + suffix
        start = len(prefix) if exact and prefix is not None else whole.rfind(text)
        if start < 0:
            spans.append((0, len(whole)))
            n_whole += 1
        else:
            spans.append((start, start + len(text)))
    return spans, n_whole


def _template_frame(loaded) -> tuple[str | None, str | None]:
    whole = loaded.chat_prompt(_SENTINEL)
    at = whole.find(_SENTINEL)
    if at < 0:
        return None, None
    return whole[:at], whole[at + len(_SENTINEL) :]


def _tokenize(tokenizer, texts: list[str], *, add_special: bool):
    kwargs = {
        "return_tensors": "pt",
        "padding": True,
        "add_special_tokens": add_special,
        "padding_side": "right",
    }
    try:
        enc = tokenizer(texts, return_offsets_mapping=True, **kwargs)
    except NotImplementedError:  # slow (Python) tokenizers give no character offsets
        return tokenizer(texts, **kwargs), None
    return enc, enc.pop("offset_mapping")


def _overlaps(offsets: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
    start, end = offsets[..., 0], offsets[..., 1]
    # Special tokens have empty spans (end == start) and never count.
    return (start < spans[:, 1:2]) & (end > spans[:, 0:1]) & (end > start)


# --- encoding only the features that are needed ---------------------------------------------


def feature_encoder(lens, indices: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> activations of the features in indices`` (all features when indices is None).

    Standard and JumpReLU lenses (and transcoders of those kinds) compute each feature from its
    own encoder column, so a slice of W_enc gives exactly lens.encode(x)[..., indices] for a
    fraction of the cost. TopK, gated and other lenses couple features (or need a second
    encoder path), so they run the full encode and then select.
    """
    if indices is None:
        return lens.encode
    kind = _sliceable_kind(lens)
    if kind is None:
        return lambda x: lens.encode(x)[..., indices]
    weight = lens.W_enc[:, indices].contiguous()
    bias = lens.b_enc[indices]
    threshold = lens.threshold[indices] if kind == "jumprelu" else None

    def encode(x: torch.Tensor) -> torch.Tensor:
        pre = lens.process_sae_in(x) @ weight + bias
        acts = lens.activation_fn(pre)
        return acts if threshold is None else acts * (pre > threshold).to(acts.dtype)

    return encode


def _sliceable_kind(lens) -> str | None:
    from sae_lens.saes.jumprelu_sae import JumpReLUSAE
    from sae_lens.saes.standard_sae import StandardSAE
    from sae_lens.saes.transcoder import JumpReLUTranscoder, Transcoder

    if not isinstance(getattr(lens, "activation_fn", None), torch.nn.ReLU):
        return None
    encode = type(lens).encode
    if encode in (StandardSAE.encode, Transcoder.encode):
        return "relu"
    if encode in (JumpReLUSAE.encode, JumpReLUTranscoder.encode):
        return "jumprelu"
    return None


def _checked_indices(lens, feature_indices: Sequence[int] | None) -> torch.Tensor | None:
    if feature_indices is None:
        return None
    d_sae = lens.cfg.d_sae
    bad = [i for i in feature_indices if not 0 <= int(i) < d_sae]
    if bad or not len(feature_indices):
        raise PermanentEngineError(
            f"Feature indices {bad or '[]'} are not features of this lens (0 to {d_sae - 1})."
        )
    indices = [int(i) for i in feature_indices]
    return torch.tensor(indices, dtype=torch.long, device=lens.W_enc.device)


# --- per-prompt statistics ---------------------------------------------------------------------


def prompt_feature_stats(
    loaded,
    lens,
    prompts: Sequence[str],
    feature_indices: Sequence[int] | None = None,
    *,
    batch_size: int = 8,
    chat: bool = True,
    positions: PositionRule | None = None,
    progress: Callable[[float], None] | None = None,
) -> PromptFeatureStats:
    """Max, mean and argmax activation per prompt for the lens's features (or the given ones)."""
    if batch_size < 1:
        raise PermanentEngineError("batch_size must be at least 1.")
    tokens = tokenize_prompts(loaded, prompts, chat=chat, positions=positions)
    indices = _checked_indices(lens, feature_indices)
    encode, hook = feature_encoder(lens, indices), lens_hook_name(lens)
    # Similar lengths share a batch, so little padding is computed; results are unsorted below.
    order = torch.argsort(tokens.lengths, stable=True)
    parts = []
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        parts.append(_batch_stats(loaded, encode, hook, tokens, rows))
        if progress is not None:
            progress(min(start + batch_size, len(order)) / len(order))
    mx, mean, arg = (_unsort(torch.cat(part), order) for part in zip(*parts, strict=True))
    if indices is None:
        indices = torch.arange(mx.shape[1])
    return PromptFeatureStats(indices.cpu(), mx, mean, arg, tokens)


def _batch_stats(loaded, encode, hook: str, tokens: TokenizedPrompts, rows: torch.Tensor):
    length = int(tokens.lengths[rows].max())
    ids = tokens.input_ids[rows, :length].to(loaded.device)
    mask = tokens.attention_mask[rows, :length].to(loaded.device)
    acts = run_to(loaded, ids, mask, [hook])[hook]
    with torch.inference_mode():
        counted = tokens.counted[rows, :length].to(acts.device)
        # Only the user's tokens are encoded: scaffolding and padding never count, and with
        # a chat template they are most of the tokens (costly for lenses like TopK that need
        # the full encoder).
        encoded = encode(acts[counted]).float()
        feats = encoded.new_full((*counted.shape, encoded.shape[-1]), float("-inf"))
        feats[counted] = encoded
        mx, arg = feats.max(dim=1)
        total = feats.masked_fill(~counted.unsqueeze(-1), 0.0).sum(dim=1)
        mean = total / counted.sum(dim=1, keepdim=True)
    return mx.cpu(), mean.cpu(), arg.cpu()


def _unsort(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(values)
    out[order] = values
    return out


def firing_rate(scores: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Fraction of prompts (rows) whose score (max activation) exceeds ``threshold``."""
    return (scores > threshold).double().mean(dim=0)


# --- contrastive statistics between two groups of prompts --------------------------------------


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per column, P(a positive score > a negative score) + 1/2 P(equal): Mann-Whitney U / n1 n2.

    Ties (common: features that do not fire score 0) get average ranks, so a feature that
    never fires in either group scores exactly 0.5.
    """
    n_pos, n_neg = _group_sizes(positive, negative)
    scores = torch.cat([positive, negative]).double().T.contiguous()  # [F, N]
    ordered = scores.sort(dim=1).values
    queries = scores[:, :n_pos].contiguous()
    below = torch.searchsorted(ordered, queries, side="left")
    upto = torch.searchsorted(ordered, queries, side="right")
    ranks = (below + upto + 1).double() / 2  # average 1-based rank of each positive score
    u_stat = ranks.sum(dim=1) - n_pos * (n_pos + 1) / 2
    return u_stat / (n_pos * n_neg)


def cohens_d(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Per column, (mean_pos - mean_neg) / pooled standard deviation.

    Zero pooled variance (every score in both groups equal within its group) has no
    standardised difference: the result is 0 when the means are equal and +/-inf otherwise,
    never a division by zero.
    """
    n_pos, n_neg = _group_sizes(positive, negative)
    pos, neg = positive.double(), negative.double()
    diff = pos.mean(dim=0) - neg.mean(dim=0)
    pooled_var = ((n_pos - 1) * pos.var(dim=0) + (n_neg - 1) * neg.var(dim=0)) / (n_pos + n_neg - 2)
    pooled = pooled_var.sqrt()
    safe = torch.where(pooled > 0, pooled, torch.ones_like(pooled))
    degenerate = torch.where(diff == 0, torch.zeros_like(diff), diff.sign() * torch.inf)
    return torch.where(pooled > 0, diff / safe, degenerate)


def _group_sizes(positive: torch.Tensor, negative: torch.Tensor) -> tuple[int, int]:
    if positive.shape[0] < 2 or negative.shape[0] < 2:
        raise PermanentEngineError(
            "Contrastive statistics need at least 2 prompts in each group; "
            f"got {positive.shape[0]} and {negative.shape[0]}."
        )
    return positive.shape[0], negative.shape[0]


# --- the same estimates as engine/analysis/statistics.py, for many features at once -----------
#
# statistics.py defines the methods (Wilson rates, stratified percentile bootstrap, label
# permutation with p = (1 + #{null >= observed}) / (1 + n)); these functions compute exactly
# those numbers for every column of a [prompts, features] matrix at once, drawing the same
# resamples and permutations from the same seed (tests/engine/test_features.py compares them
# with statistics.py column by column). Features that are ranked need the whole lens at once,
# which a loop over statistics.py could not afford.


def bootstrap_counts(n_pos: int, n_neg: int, n_boot: int, seed: int):
    """How often each observation is drawn in each stratified resample ([B, n_pos], [B, n_neg]),
    drawing exactly as statistics.two_group does."""
    rng = np.random.default_rng(seed)
    pos, neg = np.zeros((n_boot, n_pos)), np.zeros((n_boot, n_neg))
    for b in range(n_boot):
        pos[b] = np.bincount(rng.integers(0, n_pos, n_pos), minlength=n_pos)
        neg[b] = np.bincount(rng.integers(0, n_neg, n_neg), minlength=n_neg)
    return torch.from_numpy(pos), torch.from_numpy(neg)


def _interval(draws: torch.Tensor) -> tuple[float, float]:
    finite = draws[torch.isfinite(draws)].numpy()
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def _estimates(values, draws: torch.Tensor, n: int, method: str) -> list[Estimate]:
    """values [F], draws [F, B] -> one Estimate per column."""
    return [
        Estimate(float(value), *_interval(draws[f]), n, f"bootstrap-{method}")
        for f, value in enumerate(values.tolist())
    ]


def auroc_estimates(
    positive: torch.Tensor, negative: torch.Tensor, *, n_boot: int = 2000, seed: int = 0
) -> list[Estimate]:
    """Per column, AUROC with a stratified percentile-bootstrap 95 % interval
    (= statistics.auroc_estimate on that column)."""
    n_pos, n_neg = _group_sizes(positive, negative)
    w_pos, w_neg = bootstrap_counts(n_pos, n_neg, n_boot, seed)
    pos, neg = positive.double(), negative.double()
    draws = []
    for start in range(0, pos.shape[1], 16):  # [16, P, N] comparison blocks bound the memory
        diff = pos[:, None, start : start + 16] - neg[None, :, start : start + 16]
        wins = ((diff > 0).double() + 0.5 * (diff == 0).double()).permute(2, 0, 1)
        draws.append(torch.einsum("bp,fpn,bn->fb", w_pos, wins, w_neg) / (n_pos * n_neg))
    return _estimates(auroc(positive, negative), torch.cat(draws), n_pos + n_neg, "auroc")


def cohens_d_estimates(
    positive: torch.Tensor, negative: torch.Tensor, *, n_boot: int = 2000, seed: int = 0
) -> list[Estimate]:
    """Per column, Cohen's d with a stratified percentile-bootstrap 95 % interval
    (= statistics.cohens_d_estimate on that column; +/-inf draws are left out)."""
    n_pos, n_neg = _group_sizes(positive, negative)
    w_pos, w_neg = bootstrap_counts(n_pos, n_neg, n_boot, seed)
    mean_pos, var_pos = _weighted_moments(positive.double(), w_pos)
    mean_neg, var_neg = _weighted_moments(negative.double(), w_neg)
    pooled = ((n_pos - 1) * var_pos + (n_neg - 1) * var_neg) / (n_pos + n_neg - 2)
    diff = mean_pos - mean_neg
    degenerate = torch.where(diff == 0, torch.zeros_like(diff), diff.sign() * torch.inf)
    safe = torch.where(pooled > 0, pooled, torch.ones_like(pooled)).sqrt()
    draws = torch.where(pooled > 0, diff / safe, degenerate)  # [B, F]
    values = cohens_d(positive, negative)
    return _estimates(values, draws.T.contiguous(), n_pos + n_neg, "cohens-d")


def _weighted_moments(x: torch.Tensor, weights: torch.Tensor):
    """Mean and unbiased variance per resample and column: x [n, F], weights [B, n]."""
    n = x.shape[0]
    mean = weights @ x / n  # [B, F]
    centred = x[None, :, :] - mean[:, None, :]  # [B, n, F]
    var = torch.einsum("bn,bnf->bf", weights, centred * centred) / (n - 1)
    return mean, var


def rate_estimates(scores: torch.Tensor, threshold: float = 0.0) -> list[Estimate]:
    """Per column, the firing rate (score > threshold) with its Wilson 95 % interval."""
    from interp_jobs.engine.analysis.statistics import rate

    fired = (scores > threshold).sum(dim=0).tolist()
    return [rate(int(k), scores.shape[0]) for k in fired]


def _permutation_aurocs(positive, negative, n_perm: int, seed: int, *, best_only: bool = False):
    """AUROC of every column (or only the best column's, with best_only) under each label
    arrangement drawn as statistics.permutation_p_value draws them: [n_arrangements, F] (or
    [n_arrangements]), and whether the arrangements were enumerated exactly."""
    n_pos, n_neg = _group_sizes(positive, negative)
    ranks = _column_ranks(torch.cat([positive, negative]).double())  # fixed under shuffles
    n = n_pos + n_neg
    exact = math.comb(n, n_pos) <= max(n_perm, 1000)
    if exact:
        from itertools import combinations

        chosen = [list(c) for c in combinations(range(n), n_pos)]
    else:
        rng = np.random.default_rng(seed)
        chosen = [rng.permutation(n)[:n_pos].tolist() for _ in range(max(n_perm, 1000))]
    rows, parts = torch.tensor(chosen, dtype=torch.long), []
    for start in range(0, len(rows), 256):
        block = rows[start : start + 256]
        select = torch.zeros(len(block), n, dtype=torch.float64).scatter_(1, block, 1.0)
        aurocs = (select @ ranks - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        parts.append(aurocs.max(dim=1).values if best_only else aurocs)
    return torch.cat(parts), exact


def _column_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks per column, ties sharing their average rank."""
    ordered = values.T.contiguous().sort(dim=1).values
    below = torch.searchsorted(ordered, values.T.contiguous(), side="left")
    upto = torch.searchsorted(ordered, values.T.contiguous(), side="right")
    return ((below + upto + 1).double() / 2).T


def _p_value(null: torch.Tensor, observed: float, exact: bool) -> float:
    exceed = int((null >= observed - 1e-12).sum())
    return exceed / len(null) if exact else (1 + exceed) / (1 + len(null))


def auroc_p_values(
    positive: torch.Tensor, negative: torch.Tensor, *, n_perm: int = 2000, seed: int = 0
) -> list[dict]:
    """Per column, the one-sided permutation p-value that its AUROC is this high by chance
    (= statistics.permutation_p_value(statistics.auroc, ...) on that column)."""
    null, exact = _permutation_aurocs(positive, negative, n_perm, seed)
    observed = auroc(positive, negative).tolist()
    return [
        {
            "statistic": value,
            "p_value": _p_value(null[:, f], value, exact),
            "n_permutations": int(null.shape[0]),
            "exact": exact,
            "null_mean": float(null[:, f].mean()),
        }
        for f, value in enumerate(observed)
    ]


def best_auroc_chance(
    positive: torch.Tensor, negative: torch.Tensor, *, n_perm: int = 2000, seed: int = 0
) -> dict:
    """Is the best AUROC over all columns better than chance? The labels are shuffled (at
    least 1000 times) and the best AUROC any column reaches is recorded each time: with
    thousands of features and a few dozen prompts some feature always separates two groups a
    little. A column above the null's 95th percentile beats chance at the 5 % family-wise
    level (the max-statistic permutation test)."""
    best_null, exact = _permutation_aurocs(positive, negative, n_perm, seed, best_only=True)
    observed = float(auroc(positive, negative).max())
    return {
        "statistic": "best AUROC over all features",
        "observed": observed,
        "p_value": _p_value(best_null, observed, exact),
        "n_permutations": int(best_null.shape[0]),
        "exact": exact,
        "null_mean": float(best_null.mean()),
        "null_95th_percentile": float(np.percentile(best_null.numpy(), 95)),
        "seed": seed,
    }


# --- top-activating contexts ------------------------------------------------------------------


def top_contexts(
    stats: PromptFeatureStats,
    tokenizer,
    column: int,
    rows: Sequence[int],
    *,
    k: int,
    window: int,
    min_activation: float = 0.0,
) -> list[dict]:
    """The ``k`` prompts among ``rows`` where feature ``column`` peaks highest, each with a few
    tokens of the user's text on either side of the peak token."""
    if k <= 0 or not rows:
        return []
    rows_t = torch.tensor(list(rows), dtype=torch.long)
    values = stats.max[rows_t, column]
    order = torch.sort(values, descending=True, stable=True).indices[:k]
    contexts = []
    for i in order.tolist():
        if float(values[i]) <= min_activation:
            break
        row = int(rows_t[i])
        contexts.append(_context(stats, tokenizer, row, column, window, float(values[i])))
    return contexts


def _context(stats, tokenizer, row: int, column: int, window: int, value: float) -> dict:
    ids = stats.tokens.input_ids[row].tolist()
    counted = stats.tokens.counted[row].nonzero().flatten()
    first, last = int(counted[0]), int(counted[-1])
    pos = int(stats.argmax[row, column])
    left, right = max(first, pos - window), min(last, pos + window)
    return {
        "row": row,
        "activation": value,
        "left": tokenizer.decode(ids[left:pos]),
        "token": tokenizer.decode(ids[pos : pos + 1]),
        "right": tokenizer.decode(ids[pos + 1 : right + 1]),
    }
