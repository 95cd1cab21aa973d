"""The worker's cache of loaded models and lenses: reuse, and eviction by memory budget."""

import pytest

from interp_jobs.checks import resources, weights_fingerprint
from tests.checks.conftest import save_tiny_llama


@pytest.fixture(autouse=True)
def fresh_cache():
    resources.clear_cache()
    yield
    resources.clear_cache()
    resources.set_budget(resources.DEFAULT_BUDGET_BYTES)


def test_a_second_load_of_the_same_model_is_served_from_the_cache(make_context):
    context = make_context(weights_fingerprint)
    first = resources.load_model_for(context)
    hits = resources.stats["hits"]
    assert resources.load_model_for(context) is first
    assert resources.stats["hits"] == hits + 1
    assert resources.cached_bytes() == resources.size_of(first) > 0


def test_the_least_recently_used_model_is_dropped_over_the_budget(make_context, tmp_path):
    from interp_jobs.checks.base import ModelRef

    context = make_context(weights_fingerprint)
    first = resources.load_model_for(context)
    resources.set_budget(int(resources.size_of(first) * 1.5))
    other = ModelRef(path=str(save_tiny_llama(tmp_path / "other", seed=1)), format="hf_dir",
                     weights_digest="", file_digests={})
    resources.load_model_for(context, other)
    assert resources.cached_bytes() <= int(resources.size_of(first) * 1.5)
    evictions = resources.stats["evictions"]
    assert resources.load_model_for(context) is not first  # reloaded: it had been dropped
    assert resources.stats["evictions"] == evictions + 1
