"""How faithfully a lens reconstructs a model's activations, measured on held-out text.

Two kinds of numbers come out, and they are different kinds of evidence:

- Reconstruction quality (explained variance, MSE, L0, dead and dense features) is observed:
  the lens encodes and decodes activations read from the unmodified model. When only these are
  wanted the forward pass stops at the lens's hook point.
- Spliced cross-entropy is an intervention on the forward pass: the activation at the hook is
  replaced by the lens's reconstruction (or, as the reference point, by zeros) and the model's
  next-token loss is measured downstream. It says how much of the model's behaviour survives
  when the model is read through the lens; it is a property of the lens, not of the model.

Conventions follow ``sae_lens.evals`` so the numbers can be compared with published lenses:
MSE is the squared error summed over the d_in dimensions and averaged over tokens; explained
variance is ``1 - MSE / total variance`` with the variance taken about the mean activation;
cross-entropy at position t is the loss of predicting token t+1. Only positions the lens was
trained on (its config's ``seqpos_slice``) are measured, spliced or ablated; the others keep
their original activations.

Positions follow the shared rule (``analysis.positions``, ``assay-positions-v1``): the first
``sink_positions`` positions (the attention sink) are neither measured, spliced nor ablated,
whatever the lens's ``seqpos_slice`` says (pass ``sink_positions=0`` to measure them, as
``sae_lens.evals`` does); that is part 1 of the rule. Part 2, secondary sinks:
a token whose activation norm is more than ``sink_ratio``
times the batch's median (SmolLM2 parks ~20,000-norm vectors on the first token and now and
then on the second, against ~160 for text) is left out of the reconstruction statistics and
counted in ``n_sink_tokens``. A single such vector carries more squared norm than a hundred
ordinary tokens, so it would set the explained variance almost alone (0.97 with one sink in
8,128 tokens, 0.87 without it). The lens is still spliced at sink positions, so the
cross-entropy numbers include whatever its error there costs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from interp_jobs.engine.analysis.positions import PositionRule
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import capture_activations, replace_activation, run_to
from interp_jobs.engine.loading.lenses import check_lens_fits, lens_hook_name

DENSE_THRESHOLD = 0.1  # a feature firing on more than 10% of tokens is "dense"
SINK_RATIO = 10.0  # activation norm over this many medians: an attention sink
DIGITS = 6  # rounding of reported floats: far below any threshold, stable in JSON
Progress = Callable[[float, str], None]


def _ignore_progress(fraction: float, stage: str) -> None:
    return None


@dataclass(frozen=True)
class FidelityReport:
    n_sequences: int
    seq_len: int
    n_tokens: int  # tokens in the reconstruction statistics (lens positions, sinks excluded)
    n_sink_tokens: int
    sink_ratio: float | None
    explained_variance: float
    mse: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    dense_threshold: float
    firing_frequency: list[float]  # per feature: share of measured tokens it fires on
    ce: dict[str, float | None] = field(default_factory=dict)  # clean / spliced / zero / ...
    per_sequence: list[dict[str, float]] = field(default_factory=list)
    positions: dict[str, Any] = field(default_factory=dict)  # the shared rule, as applied

    def metrics(self) -> dict[str, Any]:
        """Scalar metrics, JSON-ready (firing frequencies and per-sequence CE left out)."""
        scalars = {
            "n_sequences": self.n_sequences,
            "seq_len": self.seq_len,
            "n_tokens": self.n_tokens,
            "n_sink_tokens": self.n_sink_tokens,
            "sink_ratio": self.sink_ratio,
            "explained_variance": self.explained_variance,
            "mse": self.mse,
            "l0": self.l0,
            "dead_fraction": self.dead_fraction,
            "dense_fraction": self.dense_fraction,
            "dense_threshold": self.dense_threshold,
        }
        return {**scalars, **self.ce}


@dataclass
class _Totals:
    """Running sums over measured tokens, in float64 so the variance does not cancel."""

    n: int = 0
    sum_x: Any = None
    sum_sq: float = 0.0
    sum_residual: float = 0.0
    sum_l0: float = 0.0
    fired: Any = None
    sinks: int = 0

    def add(self, x, recon, feats) -> None:
        import torch

        x64 = x.to(torch.float64)
        batch_sum = x64.sum(dim=0)
        self.sum_x = batch_sum if self.sum_x is None else self.sum_x + batch_sum
        self.sum_sq += float(x64.pow(2).sum())
        self.sum_residual += float((x64 - recon.to(torch.float64)).pow(2).sum())
        active = feats != 0
        self.sum_l0 += float(active.sum())
        counts = active.sum(dim=0, dtype=torch.long)
        self.fired = counts if self.fired is None else self.fired + counts
        self.n += x.shape[0]


def lens_positions(lens, seq_len: int, sink_positions: int = 0) -> list[int]:
    """The positions a lens was trained on, from its config's ``seqpos_slice``, less the
    first ``sink_positions`` (the attention sink, by the shared position rule)."""
    spec = lens.cfg.metadata.seqpos_slice or (None,)
    positions = [p for p in list(range(seq_len))[slice(*spec)] if p >= sink_positions]
    if not positions:
        raise PermanentEngineError(
            f"The lens reads positions {tuple(spec)}, none of which exist in sequences of "
            f"{seq_len} tokens; use longer sequences."
        )
    return positions


def measure_fidelity(
    loaded,
    lens,
    tokens,
    *,
    dense_threshold: float = DENSE_THRESHOLD,
    sink_ratio: float | None = SINK_RATIO,
    batch_size: int = 8,
    compute_ce: bool = True,
    sink_positions: int = 1,
    progress: Progress | None = None,
) -> FidelityReport:
    """Measure ``lens`` on ``tokens`` (a LongTensor (n_sequences, seq_len) of full rows)."""
    import torch

    _check_inputs(loaded, lens, tokens, dense_threshold, sink_ratio)
    progress = progress or _ignore_progress
    positions = lens_positions(lens, tokens.shape[1], sink_positions)
    totals, per_sequence = _Totals(), []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            ids = tokens[start : start + batch_size].to(loaded.device)
            per_sequence += _measure_batch(
                loaded, lens, ids, positions, totals, compute_ce, sink_ratio
            )
            progress(min(start + batch_size, len(tokens)) / len(tokens), "measuring fidelity")
    report = _report(tokens, totals, per_sequence, (dense_threshold, sink_ratio), compute_ce)
    rule = PositionRule(sink_positions=sink_positions, sink_norm_ratio=sink_ratio)
    applied = {
        **rule.describe(),
        "measured_positions": f"{positions[0]}..{positions[-1]} of each row",
        "secondary_sinks": "left out of the reconstruction statistics, still spliced",
    }
    return replace(report, positions=applied)


def _check_inputs(loaded, lens, tokens, dense_threshold: float, sink_ratio: float | None) -> None:
    check_lens_fits(lens, loaded)
    if lens.cfg.metadata.hook_name_out:
        raise PermanentEngineError(
            "This lens is a transcoder (it writes a different hook point than it reads); "
            "sae_fidelity measures SAEs, which reconstruct the activation they read."
        )
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise PermanentEngineError("Fidelity needs at least one sequence of at least 2 tokens.")
    if not 0 < dense_threshold <= 1:
        raise PermanentEngineError(f"dense_threshold must be in (0, 1], got {dense_threshold}.")
    if sink_ratio is not None and sink_ratio <= 1:
        raise PermanentEngineError(f"sink_ratio must be above 1 (or None), got {sink_ratio}.")


def _measure_batch(
    loaded,
    lens,
    ids,
    positions: list[int],
    totals: _Totals,
    compute_ce: bool,
    sink_ratio: float | None,
) -> list[dict[str, float]]:
    hook = lens_hook_name(lens)
    acts, clean_logits = _clean_pass(loaded, hook, ids, compute_ce)
    x = acts[:, positions].reshape(-1, acts.shape[-1]).to(lens.dtype)
    x = _without_sinks(x, sink_ratio, totals)
    feats = lens.encode(x)
    totals.add(x, lens.decode(feats), feats)
    if not compute_ce:
        return []
    spliced = _logits_with(loaded, hook, ids, _splice(lens, positions))
    zero = _logits_with(loaded, hook, ids, _zero(positions))
    return _sequence_losses(ids, positions, clean_logits, spliced, zero)


def _without_sinks(x, sink_ratio: float | None, totals: _Totals):
    if sink_ratio is None:
        return x
    norms = x.norm(dim=-1)
    typical = norms <= sink_ratio * norms.median()
    totals.sinks += int((~typical).sum())
    return x[typical]


def _clean_pass(loaded, hook: str, ids, with_logits: bool):
    """The activation at ``hook``, and the clean logits if the loss is measured too.

    Without logits the forward pass stops at the hook; with them the full pass is needed
    anyway, so the activation is recorded on the way instead of paying for a second pass.
    """
    if not with_logits:
        return run_to(loaded, ids, None, [hook])[hook], None
    with capture_activations(loaded, [hook], stop_after_deepest=False) as store:
        logits = loaded.model(input_ids=ids, use_cache=False).logits
    return store[hook], logits


def _logits_with(loaded, hook: str, ids, edit):
    with replace_activation(loaded, hook, edit):
        return loaded.model(input_ids=ids, use_cache=False).logits


def _splice(lens, positions: list[int]):
    def reconstruct(act):
        out = act.clone()
        x = act[:, positions].to(lens.dtype)
        out[:, positions] = lens.decode(lens.encode(x)).to(act.dtype)
        return out

    return reconstruct


def _zero(positions: list[int]):
    def ablate(act):
        out = act.clone()
        out[:, positions] = 0
        return out

    return ablate


def _sequence_losses(ids, positions, clean, spliced, zero) -> list[dict[str, float]]:
    """Per sequence: mean next-token loss at measured positions, and KL(clean || spliced)."""
    import torch

    predicting = [p for p in positions if p < ids.shape[1] - 1]
    if not predicting:
        raise PermanentEngineError("No measured position has a next token; use longer sequences.")
    targets = ids[:, [p + 1 for p in predicting]]
    logp = {
        name: torch.log_softmax(logits[:, predicting].float(), dim=-1)
        for name, logits in (("clean", clean), ("spliced", spliced), ("zero", zero))
    }
    losses = {
        name: -lp.gather(-1, targets[..., None])[..., 0].mean(dim=1) for name, lp in logp.items()
    }
    kl = (logp["clean"].exp() * (logp["clean"] - logp["spliced"])).sum(-1).mean(dim=1)
    return [
        {
            "ce_clean": float(losses["clean"][i]),
            "ce_spliced": float(losses["spliced"][i]),
            "ce_zero": float(losses["zero"][i]),
            "kl_spliced": float(kl[i]),
        }
        for i in range(ids.shape[0])
    ]


def _report(
    tokens, totals: _Totals, per_sequence, bars: tuple[float, float | None], compute_ce: bool
) -> FidelityReport:
    dense_threshold, sink_ratio = bars
    mean = totals.sum_x / totals.n
    variance = totals.sum_sq / totals.n - float(mean.pow(2).sum())
    mse = totals.sum_residual / totals.n
    explained = 1.0 - mse / variance if variance > 1e-12 else float(mse < 1e-12)
    frequency = (totals.fired.double() / totals.n).tolist()
    return FidelityReport(
        n_sequences=int(tokens.shape[0]),
        seq_len=int(tokens.shape[1]),
        n_tokens=totals.n,
        n_sink_tokens=totals.sinks,
        sink_ratio=sink_ratio,
        explained_variance=_r(explained),
        mse=_r(mse),
        l0=_r(totals.sum_l0 / totals.n),
        dead_fraction=_r(sum(f == 0 for f in frequency) / len(frequency)),
        dense_fraction=_r(sum(f > dense_threshold for f in frequency) / len(frequency)),
        dense_threshold=dense_threshold,
        firing_frequency=[_r(f) for f in frequency],
        ce=_ce_summary(per_sequence) if compute_ce else {},
        per_sequence=[{k: _r(v) for k, v in row.items()} for row in per_sequence],
    )


def _ce_summary(per_sequence: list[dict[str, float]]) -> dict[str, float | None]:
    """Mean losses (every sequence has the same number of measured tokens) and the recovery."""
    mean = {
        key: sum(row[key] for row in per_sequence) / len(per_sequence)
        for key in ("ce_clean", "ce_spliced", "ce_zero", "kl_spliced")
    }
    damage = mean["ce_zero"] - mean["ce_clean"]
    # Undefined when zeroing the activation does not hurt: then there is nothing to recover.
    recovered = (mean["ce_zero"] - mean["ce_spliced"]) / damage if damage > 1e-9 else None
    return {
        **{k: _r(v) for k, v in mean.items()},
        "fraction_loss_recovered": None if recovered is None else _r(recovered),
    }


def _r(value: float) -> float:
    return round(float(value), DIGITS)
