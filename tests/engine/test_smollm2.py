"""Checks on the real demo model. Skipped unless the verified GGUF is in the model store
(``python -m demo.model_fetch "$ASSAY_MODEL_STORE"`` puts it there)."""

import pytest
import torch

from interp_jobs.engine.hooks import run_to
from tests.factories import GGUF, REQUIRED

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(
        not GGUF.is_file() and not REQUIRED, reason=f"demo model not in the store ({GGUF})"
    ),
]


@pytest.fixture(scope="module")
def smollm2():
    from interp_jobs.engine.loading.models import load_model

    return load_model(GGUF, "gguf")


def test_smollm2_loads_as_a_30_layer_llama(smollm2):
    assert (smollm2.family, smollm2.n_layers, smollm2.d_model) == ("llama", 30, 576)
    assert smollm2.has_chat_template


def test_smollm2_answers_a_chat_prompt_correctly(smollm2):
    enc = smollm2.encode("What is the capital of France?", chat=True)
    with torch.inference_mode():
        out = smollm2.model.generate(**enc, max_new_tokens=10, do_sample=False)
    answer = smollm2.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm2_residual_stream_is_576_wide_at_every_layer(smollm2):
    enc = smollm2.encode("What is the capital of France?", chat=True)
    names = ["blocks.0.hook_resid_pre", "blocks.15.hook_resid_post", "blocks.29.hook_mlp_out"]
    acts = run_to(smollm2, enc["input_ids"], enc["attention_mask"], names)
    assert all(a.shape == (1, enc["input_ids"].shape[1], 576) for a in acts.values())
    assert all(torch.isfinite(a).all() for a in acts.values())
