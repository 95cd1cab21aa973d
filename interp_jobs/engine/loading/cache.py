"""Loaded models and lenses, kept in a per-process cache bounded by memory.

A worker runs many checks on the same model, and loading SmolLM2 takes ~17 s on a small CPU,
so loaded models and lenses are kept. The cache counts the bytes of every tensor an entry holds
and drops the least recently used entries while the total is over the budget (the entry just
loaded always stays, so one model larger than the budget still works).

Pure Python around the loaders: the worker sets the budget, checks and benchmarks load through
it, and nothing here knows about check runs.

An entry is keyed by its path and, when the caller has one, by the registered digest of the
files: files swapped at the same path then need a new entry and are never served from one
loaded before the swap. The caller must have verified the files against that digest before
loading (the worker does, in interp_jobs.worker.binding); the path stays in the key so that
two references that merely claim the same digest never share an entry.
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_BUDGET_BYTES = 4 << 30


@dataclass
class _Entry:
    value: Any
    size: int


_cache: OrderedDict[tuple, _Entry] = OrderedDict()
_budget = {"bytes": DEFAULT_BUDGET_BYTES}  # the worker sets ASSAY_WORKER_CACHE_MB
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


def cached(key: tuple, load: Callable[[], Any]) -> Any:
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


def model(path: str, fmt: str, *, device: str, dtype: str, digest: str = ""):
    from interp_jobs.engine.loading.models import load_model

    return cached(
        ("model", path, digest, fmt, device, dtype),
        lambda: load_model(path, fmt, device=device, dtype=dtype),
    )


def lens(path: str, *, device: str, dtype: str, digest: str = ""):
    from interp_jobs.engine.loading.lenses import load_lens

    return cached(
        ("lens", path, digest, device, dtype),
        lambda: load_lens(path, device=device, dtype=dtype),
    )
