"""Transcoders for Gemma 3: what sparsify trains on, and a set trained on the tiny Gemma.

Gemma 3 normalises the MLP's output before adding it to the residual, so the MLP module's own
output is not what a transcoder must write (``blocks.N.hook_mlp_out``, circuit-tracer's
``hook_mlp_out``, is the post-norm's output). A set trained on the bare ``mlp`` would look
plausible and be measured against the wrong tensor everywhere else.
"""

import contextlib
import json

import pytest
import torch

from interp_jobs.engine import transcoder_training as training
from interp_jobs.engine.hooks import capture_activations
from interp_jobs.engine.loading.models import load_model
from interp_jobs.engine.loading.transcoders import HOOK_IN, HOOK_OUT, load_set_lenses, read_set
from tests.engine.test_gemma_model import N_LAYERS, PROMPTS, save_tiny_gemma
from tests.engine.test_transcoder_training import SETTINGS  # the same tiny training


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    torch.set_num_threads(1)
    return load_model(save_tiny_gemma(tmp_path_factory.mktemp("gemma-tc")), "hf_dir")


def _batch(gemma):
    return gemma.tokenizer(PROMPTS, return_tensors="pt", padding=True)


def test_while_training_the_hooked_mlp_reads_mlp_in_and_writes_what_the_block_adds(gemma):
    hooks = [name for i in range(N_LAYERS) for name in (HOOK_IN.format(i), HOOK_OUT.format(i))]
    batch = _batch(gemma)
    with (
        torch.inference_mode(),
        capture_activations(gemma, hooks, stop_after_deepest=False) as expected,
    ):
        logits = gemma.model(**batch, use_cache=False).logits
    seen: dict = {}
    blocks = gemma.model.model.layers
    originals = [(block.mlp, block.post_feedforward_layernorm) for block in blocks]
    with training._MlpThenNorm(gemma), torch.inference_mode():
        handles = [
            block.mlp.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (a[0], out)))
            for i, block in enumerate(blocks)
        ]
        wrapped_logits = gemma.model(**batch, use_cache=False).logits
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(wrapped_logits, logits, rtol=0, atol=1e-6)
    for i in range(N_LAYERS):
        torch.testing.assert_close(seen[i][0], expected[HOOK_IN.format(i)], rtol=0, atol=0)
        torch.testing.assert_close(seen[i][1], expected[HOOK_OUT.format(i)], rtol=0, atol=1e-6)
        # the bare MLP's output is a different tensor: training on it would be wrong
        assert not torch.allclose(seen[i][1], originals[i][0](seen[i][0]), atol=1e-3)
    assert [(b.mlp, b.post_feedforward_layernorm) for b in blocks] == originals


def _train(gemma, root, tag: str):
    return training.train_transcoders(
        gemma,
        n_tokens=32 * 48,
        seed=0,
        out_dir=root / f"set-{tag}",
        work_dir=root / f"work-{tag}",
        settings=SETTINGS,
        model_info={"name": "tiny-gemma"},
        command="test",
    )


def _explained_variance(out) -> float:
    record = json.loads((out / training.TRAINING_FILE).read_text())
    return record["heldout"]["topk_before_conversion"]["summary"]["explained_variance_mean"]


def test_a_set_trained_on_gemma_explains_the_post_norm_mlp_output_and_one_on_the_bare_mlp_does_not(
    gemma, tmp_path, monkeypatch
):
    out = _train(gemma, tmp_path, "post-norm")
    lenses = load_set_lenses(read_set(out))
    assert [lens.cfg.metadata.hook_name_out for lens in lenses] == [
        HOOK_OUT.format(i) for i in range(N_LAYERS)
    ]
    # after training the model is the one it was: the norm is back in its own slot
    assert not any(
        isinstance(block.post_feedforward_layernorm, torch.nn.Identity)
        for block in gemma.model.model.layers
    )
    # the control: the same training on the bare MLP's output, measured the same way
    monkeypatch.setattr(training, "_MlpThenNorm", lambda loaded: contextlib.nullcontext())
    bare = _train(gemma, tmp_path, "bare-mlp")
    assert _explained_variance(out) > 0.05
    assert _explained_variance(bare) < _explained_variance(out) - 0.1


class _PerfectTranscoder:
    """Computes exactly what the block adds from the MLP's input (the true MLP and norm)."""

    dtype = torch.float32

    def __init__(self, block):
        self.block = block

    def encode(self, x):
        return x

    def decode(self, x):  # .forward: the splice's own hooks on these modules stay out of it
        return self.block.post_feedforward_layernorm.forward(self.block.mlp.forward(x))


def test_splicing_perfect_transcoders_into_every_gemma_mlp_leaves_the_logits_unchanged(gemma):
    """The splice (used for the set's next-token loss) must feed each transcoder the MLP's
    input; in Gemma the module it writes to is the post-norm, whose input is the MLP output."""
    from interp_jobs.engine.analysis.transcoder_fidelity import spliced_mlps

    batch = _batch(gemma)
    perfect = [_PerfectTranscoder(block) for block in gemma.model.model.layers]
    positions = list(range(batch["input_ids"].shape[1]))
    with torch.inference_mode():
        clean = gemma.model(**batch, use_cache=False).logits
        with spliced_mlps(gemma, perfect, positions):
            spliced = gemma.model(**batch, use_cache=False).logits
    torch.testing.assert_close(spliced, clean, rtol=0, atol=1e-5)
