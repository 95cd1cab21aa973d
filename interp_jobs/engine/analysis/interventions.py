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

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import EditFn, replace_activation, run_to
from interp_jobs.engine.loading.lenses import lens_hook_name

EDIT_OPS = ("set", "add")


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
        return x + (delta @ directions).to(x.dtype)

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


def mean_feature_activations(
    loaded, lens, prompts: Sequence[str], *, batch_size: int = 8, chat: bool = True
) -> torch.Tensor:
    """Each feature's mean activation over every real token of ``prompts`` (shape (d_sae,)).

    This is the replacement value of a mean ablation: the feature is set to what it does on
    average on these prompts instead of to zero, which is a smaller departure from the
    activations the model was trained on.
    """
    hook = lens_hook_name(lens)
    total = torch.zeros(lens.cfg.d_sae, dtype=torch.float64)
    count = 0
    with torch.inference_mode():
        for enc in _batches(loaded, prompts, batch_size, chat):
            x = run_to(loaded, enc["input_ids"], enc["attention_mask"], [hook])[hook]
            real = enc["attention_mask"].bool()
            total += lens.encode(x)[real].double().sum(0).cpu()
            count += int(real.sum())
    return (total / max(count, 1)).float()


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
