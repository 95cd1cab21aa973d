"""How faithfully a set of per-layer transcoders replaces a model's MLPs, on given token rows.

Observed, per layer: the transcoder reads the MLP's input and predicts its output, and we
measure explained variance (``1 - MSE / variance`` of the MLP output about its mean, MSE summed
over dimensions and averaged over tokens, as in ``sae_lens.evals``), MSE, L0 and the features
that never fired. Spliced, for the whole set at once: every MLP's output is replaced by its
transcoder's prediction (the replacement model's MLP path, without error terms), or by zeros
as the reference, and the next-token loss is measured: the fraction of loss recovered says how
much of the model survives when all its MLPs are read through the transcoders. That splice is
an intervention on the forward pass; it measures the transcoders, not the model.

Positions follow ``interp_jobs.engine.analysis.positions``: the attention sink (position 0) is
neither measured nor spliced nor ablated, as circuit-tracer leaves it out of its graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from interp_jobs.engine.analysis.positions import PositionRule
from interp_jobs.engine.hooks import capture_activations, resolve_hook
from interp_jobs.engine.loading.transcoders import HOOK_IN, HOOK_OUT

RULE = PositionRule(sink_positions=1)
DIGITS = 6
Progress = Callable[[float, str], None]


def _ignore(fraction: float, stage: str) -> None:
    return None


@dataclass
class _LayerTotals:
    n: int = 0
    sum_y: Any = None
    sum_sq: float = 0.0
    sum_residual: float = 0.0
    sum_l0: float = 0.0
    fired: Any = None

    def add(self, y, recon, feats) -> None:
        import torch

        y64 = y.to(torch.float64)
        self.sum_y = y64.sum(0) if self.sum_y is None else self.sum_y + y64.sum(0)
        self.sum_sq += float(y64.pow(2).sum())
        self.sum_residual += float((y64 - recon.to(torch.float64)).pow(2).sum())
        active = feats != 0
        self.sum_l0 += float(active.sum())
        counts = active.sum(0, dtype=torch.long)
        self.fired = counts if self.fired is None else self.fired + counts
        self.n += int(y.shape[0])

    def report(self) -> dict[str, float]:
        mean = self.sum_y / self.n
        variance = self.sum_sq / self.n - float(mean.pow(2).sum())
        mse = self.sum_residual / self.n
        return {
            "explained_variance": _r(1.0 - mse / variance if variance > 1e-12 else 0.0),
            "mse": _r(mse),
            "l0": _r(self.sum_l0 / self.n),
            "dead_fraction": _r(float((self.fired == 0).double().mean())),
        }


@dataclass(frozen=True)
class TranscoderReport:
    n_sequences: int
    seq_len: int
    n_tokens: int  # measured tokens per layer (the sink excluded)
    layers: list[dict[str, float]]
    ce: dict[str, float | None] = field(default_factory=dict)
    positions: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ev = [layer["explained_variance"] for layer in self.layers]
        l0 = [layer["l0"] for layer in self.layers]
        return {
            "n_sequences": self.n_sequences,
            "seq_len": self.seq_len,
            "n_tokens": self.n_tokens,
            "explained_variance_mean": _r(sum(ev) / len(ev)),
            "explained_variance_min": _r(min(ev)),
            "l0_mean": _r(sum(l0) / len(l0)),
            "dead_fraction_mean": _r(sum(x["dead_fraction"] for x in self.layers) / len(ev)),
            **self.ce,
        }


def measure_transcoders(
    loaded,
    lenses: Sequence,
    tokens,
    *,
    batch_size: int = 8,
    compute_ce: bool = True,
    progress: Progress | None = None,
) -> TranscoderReport:
    """Measure the ordered per-layer ``lenses`` on ``tokens`` (LongTensor n_sequences x seq_len)."""
    import torch

    progress = progress or _ignore
    positions = list(range(RULE.sink_positions, tokens.shape[1]))
    totals = [_LayerTotals() for _ in lenses]
    losses: list[dict[str, float]] = []
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            ids = tokens[start : start + batch_size].to(loaded.device)
            clean = _measure_batch(loaded, lenses, ids, positions, totals)
            if compute_ce:
                losses += _batch_losses(loaded, lenses, ids, positions, clean)
            progress(min(start + batch_size, len(tokens)) / len(tokens), "measuring transcoders")
    return TranscoderReport(
        n_sequences=int(tokens.shape[0]),
        seq_len=int(tokens.shape[1]),
        n_tokens=totals[0].n,
        layers=[{"layer": i, **t.report()} for i, t in enumerate(totals)],
        ce=_ce_summary(losses) if compute_ce else {},
        positions={**RULE.describe(), "measured": f"{positions[0]}..{positions[-1]} of each row"},
    )


def _mlp_hooks(n_layers: int) -> list[str]:
    return [name for i in range(n_layers) for name in (HOOK_IN.format(i), HOOK_OUT.format(i))]


def _measure_batch(loaded, lenses, ids, positions, totals):
    with capture_activations(loaded, _mlp_hooks(len(lenses)), stop_after_deepest=False) as store:
        logits = loaded.model(input_ids=ids, use_cache=False).logits
    for i, lens in enumerate(lenses):
        x = store[HOOK_IN.format(i)][:, positions].reshape(-1, loaded.d_model).to(lens.dtype)
        y = store[HOOK_OUT.format(i)][:, positions].reshape(-1, loaded.d_model)
        feats = lens.encode(x)
        totals[i].add(y, lens.decode(feats), feats)
    return logits


@contextmanager
def spliced_mlps(loaded, lenses: Sequence | None, positions: list[int]) -> Iterator[None]:
    """Within the block every MLP's output at ``positions`` is its transcoder's prediction from
    the MLP's actual input in this forward pass (``lenses``), or zero (``lenses=None``).

    The input is read where the transcoder reads it (``HOOK_IN``, the MLP's input) and the
    prediction written where it writes (``HOOK_OUT``). In Gemma 3 these are two modules (the
    output is ``post_feedforward_layernorm``'s, whose own input is the MLP's output, not its
    input), so the input is kept from the first hook for the second."""
    inputs: dict[int, Any] = {}

    def keep(layer: int):
        def hook(module, args):
            inputs[layer] = args[0]

        return hook

    def make(layer: int):
        def hook(module, args, output):
            out = output.clone()
            if lenses is None:
                out[:, positions] = 0
            else:
                lens = lenses[layer]
                x = inputs.pop(layer)[:, positions].to(lens.dtype)
                out[:, positions] = lens.decode(lens.encode(x)).to(out.dtype)
            return out

        return hook

    handles = []
    try:
        for layer in range(loaded.n_layers):
            reads = resolve_hook(loaded, HOOK_IN.format(layer)).module
            handles.append(reads.register_forward_pre_hook(keep(layer)))
            writes = resolve_hook(loaded, HOOK_OUT.format(layer)).module
            handles.append(writes.register_forward_hook(make(layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _batch_losses(loaded, lenses, ids, positions, clean) -> list[dict[str, float]]:
    import torch

    predicting = positions[:-1]
    targets = ids[:, [p + 1 for p in predicting]]
    logits = {"clean": clean[:, predicting]}
    for name, splice in (("spliced", lenses), ("zero", None)):
        with spliced_mlps(loaded, splice, positions):
            logits[name] = loaded.model(input_ids=ids, use_cache=False).logits[:, predicting]
    rows = []
    for i in range(ids.shape[0]):  # row by row: Gemma's 262k-word softmax of a batch is GBs
        logp = {k: torch.log_softmax(v[i].float(), -1) for k, v in logits.items()}
        ce = {k: float(-lp.gather(-1, targets[i, :, None])[:, 0].mean()) for k, lp in logp.items()}
        kl = (logp["clean"].exp() * (logp["clean"] - logp["spliced"])).sum(-1).mean()
        rows.append(
            {
                "ce_clean": ce["clean"],
                "ce_spliced": ce["spliced"],
                "ce_zero": ce["zero"],
                "kl_spliced": float(kl),
            }
        )
    return rows


def _ce_summary(rows: list[dict[str, float]]) -> dict[str, float | None]:
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    damage = mean["ce_zero"] - mean["ce_clean"]
    recovered = (mean["ce_zero"] - mean["ce_spliced"]) / damage if damage > 1e-9 else None
    return {
        **{k: _r(v) for k, v in mean.items()},
        "fraction_loss_recovered": None if recovered is None else _r(recovered),
    }


# --- top activating contexts (for the viewer's feature files) -------------------------------


@dataclass
class Contexts:
    """Per layer: the ``n_top`` strongest activations of each feature and where they were."""

    activation: list[Any]  # per layer: FloatTensor [d_sae, n_top] (0 where fewer were seen)
    row: list[Any]  # per layer: LongTensor [d_sae, n_top]
    position: list[Any]
    fired: list[Any]  # per layer: LongTensor [d_sae], tokens on which the feature fired
    n_tokens: int = 0


def top_contexts(
    loaded, lenses: Sequence, tokens, *, n_top: int = 8, batch_size: int = 8, progress=None
) -> Contexts:
    import torch

    progress = progress or _ignore
    d_sae, n_layers = lenses[0].cfg.d_sae, len(lenses)
    best = Contexts(
        activation=[torch.zeros(d_sae, n_top) for _ in range(n_layers)],
        row=[torch.zeros(d_sae, n_top, dtype=torch.long) for _ in range(n_layers)],
        position=[torch.zeros(d_sae, n_top, dtype=torch.long) for _ in range(n_layers)],
        fired=[torch.zeros(d_sae, dtype=torch.long) for _ in range(n_layers)],
    )
    positions = list(range(RULE.sink_positions, tokens.shape[1]))
    hooks = [HOOK_IN.format(i) for i in range(n_layers)]
    with torch.inference_mode():
        for start in range(0, len(tokens), batch_size):
            ids = tokens[start : start + batch_size].to(loaded.device)
            with capture_activations(loaded, hooks, stop_after_deepest=False) as store:
                loaded.model(input_ids=ids, use_cache=False)
            for layer, lens in enumerate(lenses):
                x = store[hooks[layer]][:, positions].to(lens.dtype)
                _merge(best, layer, lens.encode(x).float(), start, positions, n_top)
            best.n_tokens += ids.shape[0] * len(positions)
            progress(min(start + batch_size, len(tokens)) / len(tokens), "top contexts")
    return best


def _merge(best: Contexts, layer: int, acts, row0: int, positions: list[int], n_top: int) -> None:
    import torch

    _, n_pos, d_sae = acts.shape
    flat = acts.reshape(-1, d_sae).T  # [d_sae, batch * n_pos]
    best.fired[layer] += (flat > 0).sum(1)
    k = min(n_top, flat.shape[1])
    values, index = flat.topk(k, dim=1)
    rows = row0 + torch.div(index, n_pos, rounding_mode="floor")
    pos = torch.tensor(positions)[index % n_pos]
    all_values = torch.cat([best.activation[layer], values], 1)
    all_rows = torch.cat([best.row[layer], rows], 1)
    all_pos = torch.cat([best.position[layer], pos], 1)
    keep_values, keep = all_values.topk(n_top, dim=1)
    best.activation[layer] = keep_values
    best.row[layer] = all_rows.gather(1, keep)
    best.position[layer] = all_pos.gather(1, keep)


def _r(value: float) -> float:
    return round(float(value), DIGITS)
