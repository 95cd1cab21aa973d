"""Read and edit activations at named hook points of a loaded model.

Hook points use the TransformerLens / SAELens names (``blocks.{i}.hook_resid_post`` ...) so a
lens's ``hook_name`` can be used as is. Every hook lives inside a context manager and is
removed in ``finally``: a hook left behind by a failed check would silently corrupt every
later measurement on the cached model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch

from interp_jobs.engine.errors import EngineError, PermanentEngineError
from interp_jobs.engine.loading.architectures import FAMILIES, get_path

# Sites in the order the forward pass reaches them inside one block; the order decides which
# requested hook is the deepest, after which the forward pass may stop.
SITES = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")
_SUFFIX_TO_SITE = {
    "hook_resid_pre": "resid_pre",  # input of block i
    "hook_attn_out": "attn_out",  # attention output as added to the residual (Gemma: post-norm)
    "hook_resid_mid": "resid_mid",  # residual after attention, before the MLP's norm
    "ln2.hook_normalized": "mlp_in",  # normalised MLP input (what transcoders read)
    "hook_mlp_out": "mlp_out",  # MLP output as added to the residual (Gemma: post-norm)
    "hook_resid_post": "resid_post",  # output of block i
}
_SITE_TO_SUFFIX = {site: suffix for suffix, site in _SUFFIX_TO_SITE.items()}
_HOOK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")
EditFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class HookPoint:
    name: str
    layer: int
    site: str
    module: Any  # the torch module the hook attaches to
    phase: str  # "pre": the module's input; "post": the module's output

    @property
    def depth(self) -> int:
        return self.layer * len(SITES) + SITES.index(self.site)


class _StopForward(Exception):
    """Raised from the deepest hook so later layers never run; caught by ``run_to``."""


def format_hook_name(layer: int, site: str) -> str:
    if site not in _SITE_TO_SUFFIX:
        raise PermanentEngineError(f"Unknown hook site {site!r}; use one of: {', '.join(SITES)}.")
    return f"blocks.{layer}.{_SITE_TO_SUFFIX[site]}"


def all_hook_names(n_layers: int) -> list[str]:
    return [format_hook_name(layer, site) for layer in range(n_layers) for site in SITES]


def parse_hook_name(name: str, *, n_layers: int | None = None) -> tuple[int, str]:
    """``'blocks.3.hook_resid_post'`` -> ``(3, 'resid_post')``; checks the layer if n_layers."""
    match = _HOOK_NAME.match(name) if isinstance(name, str) else None
    if match is None or match.group(2) not in _SUFFIX_TO_SITE:
        examples = ", ".join(f"blocks.{{i}}.{s}" for s in _SUFFIX_TO_SITE)
        raise PermanentEngineError(
            f"Unknown hook point {name!r}. Hook points are named like: {examples}."
        )
    layer = int(match.group(1))
    if n_layers is not None and layer >= n_layers:
        raise PermanentEngineError(
            f"Hook point {name!r} is at layer {layer}, but the model has {n_layers} layers "
            f"(0 to {n_layers - 1}); use a lens trained on this model."
        )
    return layer, _SUFFIX_TO_SITE[match.group(2)]


def hook_width(loaded, name: str) -> int:
    """Width of the activation at a hook point; all current sites live in the residual width."""
    parse_hook_name(name, n_layers=loaded.n_layers)
    return loaded.d_model


def resolve_hook(loaded, name: str) -> HookPoint:
    layer, site = parse_hook_name(name, n_layers=loaded.n_layers)
    family = next(f for f in FAMILIES if f.name == loaded.family)
    block = get_path(loaded.model, family.blocks)[layer]
    module, phase = {
        "resid_pre": (block, "pre"),
        "attn_out": (getattr(block, family.attn_out_module), "post"),
        "resid_mid": (getattr(block, family.mid_norm), "pre"),
        "mlp_in": (getattr(block, family.mlp), "pre"),
        "mlp_out": (getattr(block, family.mlp_out_module), "post"),
        "resid_post": (block, "post"),
    }[site]
    return HookPoint(name=name, layer=layer, site=site, module=module, phase=phase)


def _main_output(output: Any) -> torch.Tensor:
    # Attention modules return (output, weights); decoder layers return a bare tensor in
    # transformers 5.x but a tuple in 4.x. The activation is always the first element.
    return output[0] if isinstance(output, tuple) else output


def _with_main_output(output: Any, new: torch.Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


def _main_input(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _with_main_input(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def _attach(point: HookPoint, edit: Callable[[torch.Tensor], torch.Tensor | None]):
    """Register ``edit`` on the point's tensor; a non-None result replaces the tensor."""
    if point.phase == "pre":

        def pre_hook(module, args, kwargs):
            new = edit(_main_input(args, kwargs))
            return None if new is None else _with_main_input(args, kwargs, new)

        return point.module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def post_hook(module, args, output):
        new = edit(_main_output(output))
        return None if new is None else _with_main_output(output, new)

    return point.module.register_forward_hook(post_hook)


def _recorder(store: dict, name: str, *, stop: bool) -> Callable[[torch.Tensor], None]:
    def record(tensor: torch.Tensor) -> None:
        store[name] = tensor
        if stop:
            raise _StopForward

    return record


@contextmanager
def capture_activations(
    loaded, hook_names: Iterable[str], *, stop_after_deepest: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the activations at ``hook_names`` into the yielded dict while the block runs.

    With ``stop_after_deepest`` the deepest hook raises a private signal so the layers after
    it never run (cheaper, and nothing downstream can touch the activations); run the forward
    pass through ``run_to``, which catches that signal. Stored tensors are not detached, so
    the caller's grad mode decides whether they carry a graph.
    """
    points = [resolve_hook(loaded, name) for name in dict.fromkeys(hook_names)]
    if not points:
        raise PermanentEngineError("No hook points were requested; name at least one.")
    deepest = max(points, key=lambda p: p.depth) if stop_after_deepest else None
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for point in points:
            handles.append(_attach(point, _recorder(store, point.name, stop=point is deepest)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def run_to(
    loaded,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    hook_names: Iterable[str],
) -> dict[str, torch.Tensor]:
    """Run the model just far enough to read ``hook_names``, under inference mode."""
    names = list(dict.fromkeys(hook_names))
    with (
        torch.inference_mode(),
        capture_activations(loaded, names) as store,
        suppress(_StopForward),
    ):
        loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    missing = [name for name in names if name not in store]
    if missing:
        raise EngineError(f"The forward pass never reached hook points {missing}.")
    return store


def _checked_edit(name: str, fn: EditFn) -> EditFn:
    def edit(tensor: torch.Tensor) -> torch.Tensor:
        new = fn(tensor)
        if not isinstance(new, torch.Tensor) or new.shape != tensor.shape:
            shape = getattr(new, "shape", type(new).__name__)
            raise PermanentEngineError(
                f"The replacement at {name} must be a tensor of shape {tuple(tensor.shape)}, "
                f"got {shape}."
            )
        return new

    return edit


@contextmanager
def replace_activation(loaded, hook_name: str, fn: EditFn) -> Iterator[None]:
    """Within the block, the activation at ``hook_name`` is replaced by ``fn(activation)``.

    Used for SAE splicing, ablation, clamping and steering. Grad mode is left to the caller
    because attribution needs gradients through the edited forward pass.
    """
    point = resolve_hook(loaded, hook_name)
    if point.site == "resid_mid":
        # resid_mid is read at the MLP norm's input, but the block keeps its own copy of the
        # residual; an edit there would reach the MLP only, which is not an intervention on
        # the residual stream. Refuse rather than report a misleading effect.
        raise PermanentEngineError(
            f"{hook_name} can be read but not replaced; edit blocks.{point.layer}.hook_attn_out "
            f"or blocks.{point.layer}.ln2.hook_normalized instead."
        )
    handle = _attach(point, _checked_edit(hook_name, fn))
    try:
        yield
    finally:
        handle.remove()
