"""Match the features of one lens to those of another by the cosine of their decoder rows.

This is how the feature catalog is carried from one model version to the next: a feature of
the new version's lens is "the same feature" as an old catalog feature when it writes (nearly)
the same direction into the residual stream.

Rule (greedy one-to-one): compute the cosine similarity between each requested old decoder row
and every new decoder row; then, taking candidate pairs from the highest cosine down, assign a
pair when neither side is assigned yet and the cosine is at least ``min_cosine``. Ties are
broken by the lower old index, then the lower new index, so the result is deterministic. Greedy
is not the optimal (Hungarian) assignment; it differs from it only when two old features compete
for the same new feature, and then it gives the new feature to the closer one, which is the
answer a reviewer would expect. Each old feature also records its best candidate regardless of
the one-to-one constraint, so a feature that lost its candidate to another is visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from interp_jobs.engine.errors import PermanentEngineError


@dataclass(frozen=True)
class Match:
    old_index: int
    new_index: int | None  # None: no new feature matched at or above min_cosine
    cosine: float | None  # cosine of the assigned pair; None when unmatched
    best_new_index: int  # the most similar new feature, assigned or not
    best_cosine: float

    @property
    def matched(self) -> bool:
        return self.new_index is not None


def _unit_rows(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().double()
    return w / w.norm(dim=1, keepdim=True).clamp(min=1e-12)


def _check_inputs(
    old_w_dec: torch.Tensor, new_w_dec: torch.Tensor, indices: Sequence[int], min_cosine: float
) -> None:
    if old_w_dec.ndim != 2 or new_w_dec.ndim != 2:
        raise PermanentEngineError("Decoder matrices must be 2-D (d_sae x d_in).")
    if old_w_dec.shape[1] != new_w_dec.shape[1]:
        raise PermanentEngineError(
            f"The lenses write vectors of different widths ({old_w_dec.shape[1]} and "
            f"{new_w_dec.shape[1]}); decoder directions can only be matched in the same space."
        )
    bad = [i for i in indices if not 0 <= i < old_w_dec.shape[0]]
    if bad:
        raise PermanentEngineError(
            f"Feature indices {bad} do not exist in the old lens (it has {old_w_dec.shape[0]} "
            "features)."
        )
    if not -1.0 <= min_cosine <= 1.0:
        raise PermanentEngineError(f"min_cosine must be between -1 and 1, got {min_cosine}.")


def cosine_table(
    old_w_dec: torch.Tensor, new_w_dec: torch.Tensor, indices: Sequence[int]
) -> torch.Tensor:
    """Cosine of each requested old decoder row with every new row: (len(indices), new d_sae)."""
    rows = torch.tensor(list(indices), dtype=torch.long, device=old_w_dec.device)
    return _unit_rows(old_w_dec[rows]) @ _unit_rows(new_w_dec).to(old_w_dec.device).T


def _candidate_pairs(cosines: torch.Tensor) -> list[tuple[float, int, int]]:
    # With k old features at most k - 1 of an old feature's candidates can be taken by the
    # others, so its top k candidates are enough for the greedy assignment.
    k = min(cosines.shape[0], cosines.shape[1])
    values, columns = cosines.topk(k, dim=1)
    return sorted(
        (-float(values[row, rank]), row, int(columns[row, rank]))
        for row in range(cosines.shape[0])
        for rank in range(k)
    )


def match_features(
    old_w_dec: torch.Tensor, new_w_dec: torch.Tensor, indices: Sequence[int], min_cosine: float
) -> list[Match]:
    """For each old feature in ``indices``, its one-to-one match among the new lens's features.

    Returns one Match per index, in the order given. Duplicate indices are matched once.
    """
    indices = list(dict.fromkeys(int(i) for i in indices))
    _check_inputs(old_w_dec, new_w_dec, indices, min_cosine)
    if not indices:
        return []
    cosines = cosine_table(old_w_dec, new_w_dec, indices)
    assigned: dict[int, tuple[int, float]] = {}
    taken: set[int] = set()
    for negative, row, column in _candidate_pairs(cosines):
        if -negative < min_cosine:
            break
        if row not in assigned and column not in taken:
            assigned[row] = (column, -negative)
            taken.add(column)
    best_values, best_columns = cosines.max(dim=1)
    return [
        Match(
            old_index=index,
            new_index=assigned[row][0] if row in assigned else None,
            cosine=assigned[row][1] if row in assigned else None,
            best_new_index=int(best_columns[row]),
            best_cosine=float(best_values[row]),
        )
        for row, index in enumerate(indices)
    ]


# --- matching by encoder and decoder, against a null from random directions ---------------------
#
# A feature is what it reads (its encoder column) and what it writes (its decoder row). Two
# features of different lenses are "the same" only when both agree: the match score of a pair
# is min(decoder cosine, encoder cosine), and pairs are assigned greedily one-to-one as above.
# A high cosine can happen by chance among thousands of candidates, so the score is compared
# with a null: the best score an old feature reaches against as many random directions (a
# random encoder column and a random decoder row per candidate, uniform on the sphere). By
# rotational symmetry that null does not depend on the old feature, so it is simulated once:
# ``null_draws`` times, the best of ``n_candidates`` scores, each the min of two independent
# cosines of random unit vectors in ``d_in`` dimensions. A match is "better than chance" when
# its score exceeds the null's 99th percentile; its p-value is (1 + #{null >= score}) / (1 + n).


@dataclass(frozen=True)
class ScoredMatch:
    old_index: int
    new_index: int | None
    score: float | None  # min(decoder cosine, encoder cosine) of the assigned pair
    decoder_cosine: float | None
    encoder_cosine: float | None
    best_new_index: int
    best_score: float
    p_value: float | None  # of the assigned pair's score under the random-direction null

    @property
    def matched(self) -> bool:
        return self.new_index is not None


def encoder_columns(lens) -> torch.Tensor:
    """The encoder as rows, (d_sae, d_in): each feature's reading direction."""
    return lens.W_enc.detach().T


def random_direction_null(
    d_in: int, n_candidates: int, *, draws: int = 200, seed: int = 0
) -> torch.Tensor:
    """``draws`` samples of the best min(cosine, cosine) an old feature reaches against
    ``n_candidates`` random (encoder, decoder) pairs in ``d_in`` dimensions."""
    generator = torch.Generator().manual_seed(seed)
    # The cosine of a fixed unit vector with a uniform random one is 2 B - 1, B ~ Beta(a, a),
    # a = (d_in - 1) / 2; drawn here as the first coordinate of a normalised Gaussian.
    best = torch.empty(draws, dtype=torch.float64)
    for draw in range(draws):
        cosines = []
        for _ in range(2):
            g = torch.randn(n_candidates, d_in, generator=generator, dtype=torch.float64)
            cosines.append(g[:, 0] / g.norm(dim=1))
        best[draw] = torch.minimum(cosines[0], cosines[1]).max()
    return best


def null_summary(null: torch.Tensor) -> dict:
    q = torch.quantile(null, torch.tensor([0.5, 0.95, 0.99], dtype=null.dtype)).tolist()
    return {"draws": len(null), "median": q[0], "q95": q[1], "q99": q[2]}


def null_p_value(null: torch.Tensor, score: float) -> float:
    return (1 + int((null >= score).sum())) / (1 + len(null))


def match_by_encoder_and_decoder(
    old_lens, new_lens, indices: Sequence[int], null: torch.Tensor
) -> list[ScoredMatch]:
    """Greedy one-to-one matching on min(decoder cosine, encoder cosine), assigning only pairs
    whose score beats the null's 99th percentile."""
    indices = list(dict.fromkeys(int(i) for i in indices))
    old_dec, new_dec = old_lens.W_dec.detach(), new_lens.W_dec.detach()
    old_enc, new_enc = encoder_columns(old_lens), encoder_columns(new_lens)
    _check_inputs(old_dec, new_dec, indices, 0.0)
    _check_inputs(old_enc, new_enc, indices, 0.0)
    if not indices:
        return []
    dec = cosine_table(old_dec, new_dec, indices)
    enc = cosine_table(old_enc, new_enc, indices)
    scores = torch.minimum(dec, enc)
    bar = float(torch.quantile(null, 0.99))
    assigned: dict[int, int] = {}
    taken: set[int] = set()
    for negative, row, column in _candidate_pairs(scores):
        if -negative <= bar:
            break
        if row not in assigned and column not in taken:
            assigned[row] = column
            taken.add(column)
    best_values, best_columns = scores.max(dim=1)
    out = []
    for row, index in enumerate(indices):
        chosen = assigned.get(row)
        score = None if chosen is None else float(scores[row, chosen])
        out.append(
            ScoredMatch(
                old_index=index,
                new_index=chosen,
                score=score,
                decoder_cosine=None if chosen is None else float(dec[row, chosen]),
                encoder_cosine=None if chosen is None else float(enc[row, chosen]),
                best_new_index=int(best_columns[row]),
                best_score=float(best_values[row]),
                p_value=None if score is None else null_p_value(null, score),
            )
        )
    return out


# --- do matched features fire alike? --------------------------------------------------------------


def token_activations(loaded, lens, texts: Sequence[str], indices: Sequence[int], *, batch_size=8):
    """Per prompt, the activations of ``indices`` on the counted tokens (the user's text, the
    attention sink left out: engine.analysis.positions), and those tokens' ids."""
    from interp_jobs.engine.analysis.features import feature_encoder, tokenize_prompts
    from interp_jobs.engine.analysis.positions import PositionRule
    from interp_jobs.engine.hooks import run_to
    from interp_jobs.engine.loading.lenses import lens_hook_name

    tokens = tokenize_prompts(loaded, texts, positions=PositionRule(sink_positions=1))
    columns = torch.tensor(list(indices), dtype=torch.long, device=lens.W_dec.device)
    encode, hook = feature_encoder(lens, columns), lens_hook_name(lens)
    acts, ids = [], []
    for start in range(0, len(texts), batch_size):
        rows = slice(start, start + batch_size)
        mask = tokens.attention_mask[rows].to(loaded.device)
        x = run_to(loaded, tokens.input_ids[rows].to(loaded.device), mask, [hook])[hook]
        with torch.inference_mode():
            for row in range(x.shape[0]):
                counted = tokens.counted[start + row].to(x.device)
                acts.append(encode(x[row][counted]).float().cpu())
                ids.append(tokens.input_ids[start + row][tokens.counted[start + row]])
    return acts, ids


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denominator = float(x.norm() * y.norm())
    return float((x * y).sum()) / denominator if denominator > 0 else float("nan")


def correlation_estimate(
    old: list[torch.Tensor], new: list[torch.Tensor], *, n_boot: int = 1000, seed: int = 0
):
    """Pearson correlation of two per-prompt token series, with a percentile-bootstrap 95 %
    interval that resamples whole prompts (tokens of one prompt are not independent)."""
    import numpy as np

    from interp_jobs.engine.analysis.statistics import Estimate

    value = pearson(torch.cat(old), torch.cat(new))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = rng.integers(0, len(old), len(old))
        draws.append(pearson(torch.cat([old[r] for r in rows]), torch.cat([new[r] for r in rows])))
    finite = np.asarray([d for d in draws if np.isfinite(d)])
    low, high = np.percentile(finite, [2.5, 97.5]) if len(finite) else (np.nan, np.nan)
    n = int(sum(len(t) for t in old))
    return Estimate(value, float(low), float(high), n, "bootstrap-prompts-pearson")
