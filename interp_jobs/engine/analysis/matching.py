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
