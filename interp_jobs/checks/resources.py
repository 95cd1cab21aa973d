"""Loading what a check needs (model, lenses), kept in a per-process cache bounded by memory.

A worker runs many checks on the same model, and loading SmolLM2 takes ~17 s on a small CPU,
so loaded models and lenses are kept. The cache counts the bytes of every tensor an entry holds
and drops the least recently used entries while the total is over the budget (the entry just
loaded always stays, so one model larger than the budget still works).
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interp_jobs.checks.base import CheckContext, CheckParameterError, LensRef, ModelRef

DEFAULT_BUDGET_BYTES = 4 << 30


@dataclass
class _Entry:
    value: Any
    size: int


_cache: OrderedDict[tuple, _Entry] = OrderedDict()
_budget = {"bytes": DEFAULT_BUDGET_BYTES}  # the runner sets ASSAY_WORKER_CACHE_MB
stats = {"hits": 0, "misses": 0, "evictions": 0}


def set_budget(budget_bytes: int) -> None:
    _budget["bytes"] = budget_bytes
    _evict()


def size_of(value: Any) -> int:
    """Bytes held by the parameters and buffers of a loaded model or lens."""
    module = getattr(value, "model", value)
    if not hasattr(module, "parameters"):
        return 0
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def cached_bytes() -> int:
    return sum(entry.size for entry in _cache.values())


def _evict() -> None:
    while len(_cache) > 1 and cached_bytes() > _budget["bytes"]:
        _cache.popitem(last=False)
        stats["evictions"] += 1


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    if key in _cache:
        _cache.move_to_end(key)
        stats["hits"] += 1
        return _cache[key].value
    stats["misses"] += 1
    value = load()
    _cache[key] = _Entry(value, size_of(value))
    _evict()
    return value


def clear_cache() -> None:
    _cache.clear()


def load_model_for(context: CheckContext, ref: ModelRef | None = None):
    from interp_jobs.engine.models import load_model

    ref = ref or context.model
    key = ("model", ref.path, ref.format, context.device, context.dtype)
    return _cached(key, lambda: load_model(ref.path, ref.format, device=context.device,
                                           dtype=context.dtype))


def lens_ref(context: CheckContext, name: str | None = None) -> LensRef:
    if not context.lenses:
        raise CheckParameterError("this check needs a lens, and none is registered for the model")
    if name is None:
        return context.lenses[0]
    for ref in context.lenses:
        if ref.name == name:
            return ref
    known = ", ".join(ref.name for ref in context.lenses)
    raise CheckParameterError(f"no lens named {name!r} for this model; known lenses: {known}")


def load_lens_for(context: CheckContext, name: str | None = None, loaded=None):
    """The lens (checked against the model it will read) and its reference."""
    from interp_jobs.engine.lenses import check_lens_fits, load_lens

    ref = lens_ref(context, name)
    key = ("lens", ref.path, context.device, context.dtype)
    lens = _cached(key, lambda: load_lens(ref.path, device=context.device, dtype=context.dtype))
    check_lens_fits(lens, loaded or load_model_for(context))
    return lens, ref
