"""Gemma 3 270M itself. Skipped unless the verified GGUF is in the model store
(``python -m demo.gemma_fetch "$ASSAY_MODEL_STORE"`` puts it there); loading it takes a few
minutes of CPU, once per module."""

import pytest
import torch

from demo.gemma_fetch import FILE_SHA256, gemma_model_path, read_provenance
from interp_jobs.engine.hooks import run_to
from tests.factories import STORE

GGUF = gemma_model_path(STORE)
pytestmark = pytest.mark.skipif(
    not GGUF.is_file(), reason=f"Gemma 3 270M not in the store ({GGUF})"
)


@pytest.fixture(scope="module")
def gemma():
    from interp_jobs.engine.loading.models import load_model

    return load_model(GGUF, "gguf")


def test_the_store_records_the_pinned_file_and_the_gemma_terms():
    provenance = read_provenance(STORE)
    assert provenance["file_sha256"] == FILE_SHA256
    assert (GGUF.parent / provenance["terms"]["file"]).is_file()


def test_gemma_loads_as_an_18_layer_gemma3_base_model(gemma):
    assert type(gemma.model).__name__ == "Gemma3ForCausalLM"
    assert (gemma.family, gemma.n_layers, gemma.d_model) == ("gemma3", 18, 640)
    assert not gemma.has_chat_template  # a base model: probes go in as plain text


def test_gemma_completes_a_factual_pattern(gemma):
    enc = gemma.encode("The capital of Germany is Berlin. The capital of France is")
    with torch.inference_mode():
        logits = gemma.model(**enc).logits[0, -1]
    assert gemma.tokenizer.decode([int(logits.argmax())]).strip() == "Paris"


def test_residual_hooks_equal_hidden_states_on_the_real_model(gemma):
    enc = gemma.encode("Sparse autoencoders read the residual stream.")
    names = ["blocks.0.hook_resid_pre", "blocks.9.hook_resid_post", "blocks.9.hook_mlp_out"]
    acts = run_to(gemma, enc["input_ids"], enc["attention_mask"], names)
    with torch.inference_mode():
        hidden = gemma.model(**enc, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["blocks.0.hook_resid_pre"], hidden[0])
    torch.testing.assert_close(acts["blocks.9.hook_resid_post"], hidden[10])
    assert acts["blocks.9.hook_mlp_out"].shape[-1] == 640
