"""Loading what a check needs (model, lenses, probe sets), with a small per-process cache.

A worker runs many checks on the same model, and loading SmolLM2 takes ~17 s on a small CPU,
so loaded models and lenses are kept, the least recently used dropped first.
"""

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from interp_jobs.checks.base import CheckContext, CheckParameterError, LensRef, ModelRef

MAX_CACHED = 4
_cache: OrderedDict[tuple, Any] = OrderedDict()


def _cached(key: tuple, load: Callable[[], Any]) -> Any:
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    value = load()
    _cache[key] = value
    while len(_cache) > MAX_CACHED:
        _cache.popitem(last=False)
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
