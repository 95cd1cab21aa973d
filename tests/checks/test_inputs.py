"""The worker's cache of loaded models and lenses: reuse, and eviction by memory budget."""

import pytest

from interp_jobs.checks import inputs, weights_fingerprint
from interp_jobs.engine.loading import cache
from tests.factories import save_tiny_llama


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear_cache()
    yield
    cache.clear_cache()
    cache.set_budget(cache.DEFAULT_BUDGET_BYTES)


def test_a_second_load_of_the_same_model_is_served_from_the_cache(make_context):
    context = make_context(weights_fingerprint)
    first = inputs.load_model_for(context)
    hits = cache.stats["hits"]
    assert inputs.load_model_for(context) is first
    assert cache.stats["hits"] == hits + 1
    assert cache.cached_bytes() == cache.size_of(first) > 0


def test_the_least_recently_used_model_is_dropped_over_the_budget(make_context, tmp_path):
    from interp_jobs.checks.base import ModelRef

    context = make_context(weights_fingerprint)
    first = inputs.load_model_for(context)
    cache.set_budget(int(cache.size_of(first) * 1.5))
    other = ModelRef(
        path=str(save_tiny_llama(tmp_path / "other", seed=1)),
        format="hf_dir",
        weights_digest="",
        file_digests={},
    )
    inputs.load_model_for(context, other)
    assert cache.cached_bytes() <= int(cache.size_of(first) * 1.5)
    evictions = cache.stats["evictions"]
    assert inputs.load_model_for(context) is not first  # reloaded: it had been dropped
    assert cache.stats["evictions"] == evictions + 1
