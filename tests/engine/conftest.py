"""Fixtures for engine tests: tiny, seeded, randomly initialised models (built by
tests.factories) saved to disk and loaded back through the engine."""

import pytest
import torch

from tests.factories import (
    CHAT_TEMPLATE,
    SavedModel,
    save_tiny,
    save_tiny_gguf,
    tiny_gpt2,
    tiny_llama,
)

torch.set_num_threads(1)  # tiny models gain nothing from threads; keeps timings stable


@pytest.fixture(scope="session")
def make_saved_model():
    """``make(directory, build, seed=..., chat_template=...)`` for tests that need their own."""
    return save_tiny


@pytest.fixture(scope="session")
def chat_template() -> str:
    return CHAT_TEMPLATE


@pytest.fixture(scope="session")
def llama_saved(tmp_path_factory) -> SavedModel:
    return save_tiny(tmp_path_factory.mktemp("llama"), tiny_llama, chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def gpt2_saved(tmp_path_factory) -> SavedModel:
    return save_tiny(tmp_path_factory.mktemp("gpt2"), tiny_gpt2, seed=1)


@pytest.fixture(scope="session")
def llama_gguf(tmp_path_factory) -> SavedModel:
    return save_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


@pytest.fixture(params=["llama", "gpt2"])
def saved(request, llama_saved, gpt2_saved) -> SavedModel:
    return {"llama": llama_saved, "gpt2": gpt2_saved}[request.param]


@pytest.fixture
def loaded(saved):
    """A fresh load per test, so hooks or state from one test can never leak into another."""
    from interp_jobs.engine.loading.models import load_model

    return load_model(saved.path, "hf_dir")


@pytest.fixture
def llama_loaded(llama_saved):
    from interp_jobs.engine.loading.models import load_model

    return load_model(llama_saved.path, "hf_dir")


@pytest.fixture
def batch(loaded):
    return loaded.encode(["the cat sat on the mat", "paris is the capital"])
