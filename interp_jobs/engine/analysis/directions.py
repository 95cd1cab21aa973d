"""The refusal direction (Arditi et al. 2024, "Refusal in Language Models Is Mediated by a Single
Direction"): a positive control for interventions.

1. Run harmful and harmless prompts (chat template applied) up to ``hook`` and take the
   activation at the last prompt position: the end of the template's generation prompt, the
   "post-instruction" position where the paper finds the direction.
2. The direction is the difference of the two means, ``r = mean(harmful) - mean(harmless)``
   (not normalised: its length is the size of the shift between the groups).
3. Activation addition: ``x -> x + coefficient * r`` at ``hook``, every position (the paper adds
   ``r`` at one layer to induce refusal on harmless prompts).
4. Directional ablation: ``x -> x - (x . r_hat) r_hat`` on everything written into the residual
   stream (the embeddings, every attention and every MLP output), so no layer can read or write
   the direction (the paper's ablation, which suppresses refusal on harmful prompts).

Both leave attention sinks alone (positions.sink_mask: rule assay-positions-v1).

A check must compute the direction on prompts it does not evaluate on; the caller passes them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch

from interp_jobs.engine.analysis.interventions import last_real_positions
from interp_jobs.engine.analysis.positions import sink_mask
from interp_jobs.engine.hooks import format_hook_name, replace_activation, run_to


@dataclass(frozen=True)
class Direction:
    hook: str
    vector: torch.Tensor  # (d_model,), the difference of means, float32 on the model's device
    n_harmful: int
    n_harmless: int

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def describe(self) -> dict:
        return {
            "hook": self.hook,
            "position": "last prompt token (end of the chat template's generation prompt)",
            "rule": "difference of means, harmful minus harmless (Arditi et al. 2024)",
            "norm": self.norm,
            "n_harmful": self.n_harmful,
            "n_harmless": self.n_harmless,
        }


def last_token_means(
    loaded, hook: str, prompts: Sequence[str], *, batch_size: int = 8
) -> torch.Tensor:
    """Mean activation at ``hook`` over the last real token of each (templated) prompt."""
    total = torch.zeros(loaded.d_model, dtype=torch.float64)
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            enc = loaded.encode(list(prompts[start : start + batch_size]), chat=True)
            x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [hook])[hook]
            rows = torch.arange(x.shape[0], device=x.device)
            total += x[rows, last_real_positions(enc["attention_mask"])].double().sum(0).cpu()
    return (total / max(len(prompts), 1)).float()


def refusal_direction(
    loaded,
    hook: str,
    harmful: Sequence[str],
    harmless: Sequence[str],
    *,
    batch_size: int = 8,
) -> Direction:
    vector = last_token_means(loaded, hook, harmful, batch_size=batch_size) - last_token_means(
        loaded, hook, harmless, batch_size=batch_size
    )
    return Direction(hook, vector.to(loaded.device), len(harmful), len(harmless))


@contextmanager
def adding(loaded, direction: Direction, coefficient: float) -> Iterator[None]:
    """Within the block, ``coefficient * r`` is added at the direction's hook, every position."""
    shift = coefficient * direction.vector

    def add(x: torch.Tensor) -> torch.Tensor:
        return x + shift.to(x.dtype) * sink_mask(x)

    with replace_activation(loaded, direction.hook, add):
        yield


def ablation_hooks(n_layers: int) -> list[str]:
    """Every site that writes into the residual stream: the embeddings (the input of block 0)
    and each block's attention and MLP outputs."""
    sites = [format_hook_name(0, "resid_pre")]
    for layer in range(n_layers):
        sites += [format_hook_name(layer, "attn_out"), format_hook_name(layer, "mlp_out")]
    return sites


@contextmanager
def ablating(loaded, direction: Direction) -> Iterator[None]:
    """Within the block, the direction is projected out of everything written into the residual
    stream (so it is absent from the residual stream at every layer)."""
    unit = direction.vector / direction.vector.norm().clamp(min=1e-12)

    def project_out(x: torch.Tensor) -> torch.Tensor:
        u = unit.to(x.dtype)
        return x - (x @ u).unsqueeze(-1) * u * sink_mask(x)

    with ExitStack() as stack:
        for hook in ablation_hooks(loaded.n_layers):
            stack.enter_context(replace_activation(loaded, hook, project_out))
        yield


def random_directions(direction, count: int, seed: int) -> list[Direction]:
    """``count`` directions drawn uniformly on the sphere, each with ``direction``'s norm and at
    its hook: the positive control's null (would any vector of that size at that layer do what
    the refusal direction does?). Drawn in float64 on the CPU so the draws do not depend on the
    device."""
    generator = torch.Generator().manual_seed(seed)
    vector = direction.vector
    norm = float(vector.norm())
    draws = []
    for _ in range(count):
        v = torch.randn(vector.shape[-1], generator=generator, dtype=torch.float64)
        scaled = (v * (norm / float(v.norm()))).to(device=vector.device, dtype=vector.dtype)
        draws.append(Direction(direction.hook, scaled, 0, 0))
    return draws
