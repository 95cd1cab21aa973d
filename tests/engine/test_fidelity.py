"""Lens fidelity on constructed lenses whose answers are known, and against sae_lens.evals."""

import pytest
import torch

from interp_jobs.engine.analysis.fidelity import lens_positions, measure_fidelity
from interp_jobs.engine.errors import PermanentEngineError

HOOK = "blocks.1.hook_resid_post"
D = 32  # the tiny models' width (tests/engine/conftest.py)
BOS = 2  # "<s>" in the tiny tokenizer; it never occurs inside the rows built here


def constructed_lens(*, decoder: str = "identity", seqpos=(None,), d_in: int = D):
    """A standard SAE with 2*d_in + 2 features whose behaviour is known exactly.

    Features 0..2d-1 encode x and -x through ReLUs; with the identity decoder they rebuild x
    exactly. Feature 2d always fires (bias 1, no input weights, no decoder row) and feature
    2d+1 never fires (bias -1). With ``decoder="zero"`` every reconstruction is zero.
    """
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    metadata = SAEMetadata(hook_name=HOOK, model_name="tiny", seqpos_slice=seqpos)
    cfg = StandardSAEConfig(
        d_in=d_in, d_sae=2 * d_in + 2, apply_b_dec_to_input=False, metadata=metadata
    )
    lens = StandardSAE(cfg)
    eye = torch.eye(d_in)
    with torch.no_grad():
        lens.W_enc.zero_()
        lens.W_enc[:, :d_in] = eye
        lens.W_enc[:, d_in : 2 * d_in] = -eye
        lens.b_enc.zero_()
        lens.b_enc[2 * d_in], lens.b_enc[2 * d_in + 1] = 1.0, -1.0
        lens.W_dec.zero_()
        if decoder == "identity":
            lens.W_dec[:d_in], lens.W_dec[d_in : 2 * d_in] = eye, -eye
        lens.b_dec.zero_()
    return lens.eval()


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    """A tiny Llama with large weights, so its greedy continuations are confident and
    zero-ablating its residual stream costs a lot of loss (a default-initialised random model
    predicts near-uniformly, and then there is no loss to recover)."""
    from interp_jobs.engine.loading.models import load_model
    from tests.factories import save_tiny, tiny_llama

    def build(vocab_size: int):
        model = tiny_llama(vocab_size)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 2:
                    param.mul_(25)
        return model

    return load_model(save_tiny(tmp_path_factory.mktemp("confident"), build).path, "hf_dir")


def greedy_rows(loaded, n: int = 6, length: int = 16, *, seed: int = 0):
    """Rows the model itself continues greedily from one random token: it predicts them well."""
    start = rows(loaded, n=n, length=1, seed=seed)
    with torch.inference_mode():
        return loaded.model.generate(
            start,
            attention_mask=torch.ones_like(start),
            max_new_tokens=length - 1,
            min_new_tokens=length - 1,
            do_sample=False,
        )


def rows(loaded, n: int = 6, length: int = 16, *, seed: int = 0, bos: bool = False):
    """Seeded random token rows (no special tokens), optionally starting with BOS."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, len(loaded.tokenizer), (n, length), generator=generator)
    if bos:
        tokens[:, 0] = BOS
    return tokens


def test_a_perfect_reconstruction_explains_all_variance_and_recovers_all_loss(confident):
    report = measure_fidelity(confident, constructed_lens(), greedy_rows(confident))
    metrics = report.metrics()
    assert metrics["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["mse"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["ce_spliced"] == pytest.approx(metrics["ce_clean"], abs=1e-5)
    assert metrics["kl_spliced"] == pytest.approx(0.0, abs=1e-5)
    assert metrics["ce_zero"] > metrics["ce_clean"] + 1.0
    assert metrics["fraction_loss_recovered"] == pytest.approx(1.0, abs=1e-4)


def test_a_zero_decoder_recovers_nothing_and_explains_no_variance(confident):
    report = measure_fidelity(confident, constructed_lens(decoder="zero"), greedy_rows(confident))
    metrics = report.metrics()
    assert metrics["ce_spliced"] == pytest.approx(metrics["ce_zero"], abs=1e-6)
    assert metrics["fraction_loss_recovered"] == pytest.approx(0.0, abs=1e-5)
    # Reconstructing 0 leaves the whole second moment unexplained: EV = -|mean|^2 / variance.
    assert metrics["explained_variance"] <= 0.0
    assert metrics["mse"] > 0


def test_l0_dead_and_dense_fractions_match_a_direct_count(llama_loaded):
    tokens = rows(llama_loaded, n=4, length=12)
    lens = constructed_lens()
    report = measure_fidelity(llama_loaded, lens, tokens, dense_threshold=0.6, sink_positions=0)
    from interp_jobs.engine.hooks import run_to

    x = run_to(llama_loaded, tokens, None, [HOOK])[HOOK].reshape(-1, D)
    active = torch.cat(
        [
            x > 0,
            x < 0,
            torch.ones(len(x), 1, dtype=torch.bool),
            torch.zeros(len(x), 1, dtype=torch.bool),
        ],
        dim=1,
    )
    frequency = active.double().mean(dim=0)
    assert report.n_tokens == tokens.numel()
    assert report.l0 == pytest.approx(float(active.sum(dim=1).double().mean()), abs=1e-6)
    assert report.firing_frequency[2 * D] == 1.0
    assert report.firing_frequency[2 * D + 1] == 0.0
    assert report.dead_fraction == pytest.approx(float((frequency == 0).double().mean()), abs=1e-6)
    assert report.dense_fraction == pytest.approx(
        float((frequency > 0.6).double().mean()), abs=1e-6
    )


def test_only_the_positions_the_lens_was_trained_on_are_measured_and_spliced(llama_loaded):
    assert lens_positions(constructed_lens(seqpos=(1, None)), 5) == [1, 2, 3, 4]
    tokens = rows(llama_loaded, n=3, length=10, bos=True)
    report = measure_fidelity(
        llama_loaded, constructed_lens(decoder="zero", seqpos=(1, None)), tokens
    )
    assert report.n_tokens == 3 * 9
    # Position 0 keeps its activation under both edits, so they still agree exactly.
    assert report.ce["ce_spliced"] == pytest.approx(report.ce["ce_zero"], abs=1e-6)


def test_position_zero_is_neither_measured_nor_spliced_by_the_shared_position_rule(llama_loaded):
    tokens = rows(llama_loaded, n=3, length=10)
    shared = measure_fidelity(llama_loaded, constructed_lens(decoder="zero"), tokens)
    every = measure_fidelity(
        llama_loaded, constructed_lens(decoder="zero"), tokens, sink_positions=0
    )
    assert (shared.n_tokens, every.n_tokens) == (3 * 9, 3 * 10)
    assert shared.positions["rule"] == "assay-positions-v1"
    assert shared.positions["measured_positions"] == "1..9 of each row"
    # Position 0 keeps its activation under both edits, so they still agree exactly.
    assert shared.ce["ce_spliced"] == pytest.approx(shared.ce["ce_zero"], abs=1e-6)


def test_attention_sinks_are_left_out_of_reconstruction_statistics_but_still_spliced(llama_loaded):
    from interp_jobs.engine.hooks import replace_activation

    def sink_at_position_one(act):  # what SmolLM2 does now and then: a ~100x norm vector
        out = act.clone()
        out[:, 1] *= 1000
        return out

    tokens, lens = rows(llama_loaded, n=3, length=10), constructed_lens(decoder="zero")
    with replace_activation(llama_loaded, "blocks.0.hook_resid_post", sink_at_position_one):
        robust = measure_fidelity(llama_loaded, lens, tokens, sink_positions=0)
        raw = measure_fidelity(llama_loaded, lens, tokens, sink_ratio=None, sink_positions=0)
    assert (robust.n_sink_tokens, robust.n_tokens) == (3, 27)
    assert (raw.n_sink_tokens, raw.n_tokens) == (0, 30)
    assert robust.mse < raw.mse / 100  # three vectors dominated the error
    assert robust.ce == raw.ce  # the splice covers every lens position either way


def test_activation_only_metrics_stop_the_forward_pass_at_the_hook(llama_loaded):
    calls = []
    last = llama_loaded.model.model.layers[-1]
    handle = last.register_forward_hook(lambda *args: calls.append(1))
    try:
        report = measure_fidelity(
            llama_loaded, constructed_lens(), rows(llama_loaded), compute_ce=False
        )
    finally:
        handle.remove()
    assert calls == []
    assert report.ce == {}
    assert report.per_sequence == []


def test_same_inputs_give_identical_reports(llama_loaded):
    lens, tokens = constructed_lens(decoder="zero"), rows(llama_loaded, seed=3)
    first = measure_fidelity(llama_loaded, lens, tokens, batch_size=4)
    second = measure_fidelity(llama_loaded, lens, tokens, batch_size=4)
    assert first == second
    assert len(first.per_sequence) == len(tokens)


def test_a_lens_of_another_width_is_refused(llama_loaded):
    with pytest.raises(PermanentEngineError, match=r"width 48.*width 32"):
        measure_fidelity(llama_loaded, constructed_lens(d_in=48), rows(llama_loaded))


def test_a_bad_dense_threshold_is_refused(llama_loaded):
    with pytest.raises(PermanentEngineError, match="dense_threshold"):
        measure_fidelity(llama_loaded, constructed_lens(), rows(llama_loaded), dense_threshold=0)


# --- cross-check against sae_lens.evals ---------------------------------------------------
#
# sae_lens.evals runs on a HookedRootModule; training.proxy_lm gives it our model through
# SAELens's own HookedProxyLM, and an ActivationsStore over the same token rows. Both sides
# then see the same activations and splice the same reconstruction, so every shared metric
# must agree: explained variance (ExplainedVarianceCalculator), MSE (sum over d_in, mean
# over tokens), L0, feature density, CE clean / with SAE / zero-ablated, and the CE score.


def random_lens(seed: int = 0, seqpos=(None,)):
    lens = constructed_lens(seqpos=seqpos)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lens.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return lens


def sae_lens_evals(loaded, lens, tokens, *, ignore_tokens=False):
    """Run sae_lens.evals on ``tokens``: reconstruction and sparsity passes with fresh stores
    (run_evals does not rewind its store between the two, so one store would feed them
    different rows)."""
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    from interp_jobs.engine.training import proxy_lm

    n = len(tokens)
    configs = (
        EvalConfig(batch_size_prompts=n, n_eval_reconstruction_batches=1, compute_ce_loss=True),
        EvalConfig(
            batch_size_prompts=n,
            n_eval_sparsity_variance_batches=1,
            compute_sparsity_metrics=True,
            compute_variance_metrics=True,
            compute_featurewise_density_statistics=True,
        ),
    )
    results = []
    with proxy_lm(loaded, HOOK) as proxy:
        for config in configs:
            store = _store(proxy, tokens)
            results.append(
                run_evals(
                    lens,
                    store,
                    proxy,
                    ActivationScaler(),
                    config,
                    exclude_special_tokens=ignore_tokens,
                )
            )
    (recon, _), (sparsity, features) = results
    return {
        **recon["model_performance_preservation"],
        **sparsity["reconstruction_quality"],
        **sparsity["sparsity"],
        "feature_density": features["feature_density"],
    }


def _store(proxy, tokens):
    from datasets import Dataset
    from sae_lens.training.activations_store import ActivationsStore

    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    return ActivationsStore(
        model=proxy,
        dataset=dataset,
        streaming=False,
        hook_name=HOOK,
        hook_head_index=None,
        context_size=tokens.shape[1],
        d_in=D,
        n_batches_in_buffer=2,
        total_training_tokens=tokens.numel(),
        store_batch_size_prompts=len(tokens),
        train_batch_size_tokens=tokens.numel(),
        prepend_bos=False,
        normalize_activations="none",
        device=torch.device("cpu"),
        dtype="float32",
    )


def test_metrics_match_sae_lens_evals_on_the_same_tokens(confident):
    lens, tokens = random_lens(), greedy_rows(confident, seed=5)
    ours = measure_fidelity(confident, lens, tokens, batch_size=6, sink_positions=0)
    theirs = sae_lens_evals(confident, lens, tokens)
    close = dict(rel=1e-4, abs=1e-5)
    assert ours.explained_variance == pytest.approx(theirs["explained_variance"], **close)
    assert ours.mse == pytest.approx(theirs["mse"], **close)
    assert ours.l0 == pytest.approx(theirs["l0"], **close)
    assert ours.firing_frequency == pytest.approx(theirs["feature_density"], abs=1e-6)
    assert ours.ce["ce_clean"] == pytest.approx(theirs["ce_loss_without_sae"], **close)
    assert ours.ce["ce_spliced"] == pytest.approx(theirs["ce_loss_with_sae"], **close)
    assert ours.ce["ce_zero"] == pytest.approx(theirs["ce_loss_with_ablation"], **close)
    assert ours.ce["fraction_loss_recovered"] == pytest.approx(
        theirs["ce_loss_score"], rel=1e-3, abs=1e-4
    )


def test_skipping_position_zero_matches_sae_lens_ignoring_that_token(llama_loaded):
    """Our lenses skip position 0 (seqpos_slice); sae_lens can express that only by ignoring
    a token id, so every row starts with a BOS that occurs nowhere else. sae_lens zero-ablates
    every position, ignored ones included, while we ablate only the measured positions, so
    the zero-ablated loss (and the score) are not compared here."""
    lens = random_lens(seed=1, seqpos=(1, None))
    tokens = rows(llama_loaded, n=6, length=16, seed=6, bos=True)
    ours = measure_fidelity(llama_loaded, lens, tokens, batch_size=6)
    theirs = sae_lens_evals(llama_loaded, lens, tokens, ignore_tokens=[BOS])
    close = dict(rel=1e-4, abs=1e-5)
    assert ours.n_tokens == 6 * 15
    assert ours.explained_variance == pytest.approx(theirs["explained_variance"], **close)
    assert ours.mse == pytest.approx(theirs["mse"], **close)
    assert ours.l0 == pytest.approx(theirs["l0"], **close)
    assert ours.ce["ce_clean"] == pytest.approx(theirs["ce_loss_without_sae"], **close)
    assert ours.ce["ce_spliced"] == pytest.approx(theirs["ce_loss_with_sae"], **close)
