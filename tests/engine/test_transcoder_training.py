"""Training transcoders with sparsify on the tiny Llama: in one go, or fit and finish apart
(the fit can run on another machine), giving the same set; the record and the contexts."""

import json

import pytest
import torch

from interp_jobs.engine import transcoder_training as training
from interp_jobs.engine.analysis.transcoder_fidelity import measure_transcoders
from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.models import load_model
from interp_jobs.engine.loading.transcoders import load_set_lenses, read_set
from tests.factories import save_tiny_llama

SETTINGS = training.TranscoderSettings(
    width=16,
    k=4,
    seq_len=32,
    batch_sequences=4,
    calibration_sequences=4,
    context_sequences=4,
    context_top=2,
    eval_sequences=4,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return load_model(save_tiny_llama(tmp_path_factory.mktemp("tiny-train")), "hf_dir")


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    return training.train_transcoders(
        tiny,
        n_tokens=32 * 12,
        seed=0,
        out_dir=root / "set",
        work_dir=root / "work",
        settings=SETTINGS,
        model_info={"name": "tiny"},
        command="test",
    )


def test_a_trained_set_loads_verifies_and_records_how_it_was_made(trained, tiny):
    info = read_set(trained)
    lenses = load_set_lenses(info)
    assert len(lenses) == tiny.n_layers
    assert info.manifest["d_transcoder"] == 16
    record = json.loads((trained / "training.json").read_text())
    assert record["trainer"]["library"] == "eai-sparsify"
    assert record["text"]["sequences"] == 12
    assert record["text"]["tokens_trained"] == 12 * 31  # position 0 (the sink) left out
    assert record["text"]["safety"]["name"] == "safety-tuning-v1"
    assert record["seed"] == 0
    summary = record["heldout"]["shipped_jumprelu"]["summary"]
    assert set(summary) >= {"explained_variance_mean", "l0_mean", "ce_spliced", "ce_clean"}
    assert len(record["heldout"]["shipped_jumprelu"]["layers"]) == tiny.n_layers
    assert len(record["jumprelu"]["thresholds"]) == tiny.n_layers


def test_the_jumprelu_threshold_keeps_about_k_features_per_calibration_token(trained, tiny):
    lenses = load_set_lenses(read_set(trained))
    mix, _ = training.training_mix()
    docs = training.training_documents(mix, SETTINGS.safety_repeats)
    rows = training.pack(tiny, docs, seq_len=32, seed=0, n_sequences=4).tokens
    report = measure_transcoders(tiny, lenses, rows, compute_ce=False)
    mean_l0 = sum(layer["l0"] for layer in report.layers) / len(report.layers)
    assert mean_l0 == pytest.approx(SETTINGS.k, rel=0.35)


def test_the_recorded_heldout_numbers_are_rederived_from_the_saved_files(trained, tiny):
    record = json.loads((trained / "training.json").read_text())
    lenses = load_set_lenses(read_set(trained))
    mix, _ = training.training_mix()
    heldout = training.pack(tiny, mix.split("heldout"), seq_len=32, seed=0, n_sequences=4)
    assert heldout.digest == record["heldout"]["token_sha256"]
    again = measure_transcoders(tiny, lenses, heldout.tokens)
    recorded_layers = record["heldout"]["shipped_jumprelu"]["layers"]
    for ours, recorded in zip(again.layers, recorded_layers, strict=True):
        assert ours["explained_variance"] == pytest.approx(recorded["explained_variance"], abs=1e-5)


def test_remeasuring_a_set_rewrites_only_its_heldout_figures_and_says_why(trained, tiny, tmp_path):
    import shutil

    copy = shutil.copytree(trained, tmp_path / "set")
    before = json.loads((copy / "training.json").read_text())
    before["model"]["weights_sha256"] = "the trained-on weights"
    (copy / "training.json").write_text(json.dumps(before))
    with pytest.raises(PermanentEngineError, match="remeasure it on the model it was trained on"):
        training.remeasure(tiny, copy, "remeasure test", "other weights", "a test")
    after = training.remeasure(tiny, copy, "remeasure test", "the trained-on weights", "a test")
    read_set(copy)  # the weights' digests still verify
    assert after["heldout"]["remeasured"]["command"] == "remeasure test"
    assert after["heldout"]["remeasured"]["why"] == "a test"
    first = before["heldout"]["shipped_jumprelu"]["summary"]
    assert after["heldout"]["remeasured"]["summary_before"] == first
    # on a Llama the MLP reads and writes one module: the corrected splice measures the same
    assert after["heldout"]["shipped_jumprelu"]["summary"] == pytest.approx(
        before["heldout"]["shipped_jumprelu"]["summary"], abs=1e-5
    )
    assert after["heldout"]["measured_by"] == before["heldout"]["measured_by"]
    unchanged = {k: v for k, v in after.items() if k != "heldout"}
    assert unchanged == {k: v for k, v in before.items() if k != "heldout"}


def test_contexts_point_at_training_rows_that_can_be_rebuilt(trained, tiny):
    rows = training.context_rows(tiny, trained)
    assert rows is not None
    assert rows.shape == (4, 32)
    from interp_jobs.engine.analysis.graph_files import load_contexts

    contexts = load_contexts(trained / "layer_00")
    assert contexts["activation"].shape == (16, 2)
    assert int(contexts["row"].max()) < 4
    assert int(contexts["position"].min()) >= 0


def test_fit_elsewhere_then_finish_here_gives_the_same_set(tiny, tmp_path, trained):
    rows, _ = training.pack_epochs(tiny, SETTINGS, 0, 32 * 12)
    coders, thresholds, record = training.run_fit(tiny, rows, SETTINGS, 0, tmp_path / "work")
    training.save_fit(tmp_path / "fitted", coders, thresholds, record, SETTINGS.dtype)
    out = training.train_transcoders(
        tiny,
        n_tokens=32 * 12,
        seed=0,
        out_dir=tmp_path / "set",
        work_dir=tmp_path / "work2",
        settings=SETTINGS,
        model_info={"name": "tiny"},
        fitted_dir=tmp_path / "fitted",
    )
    ours = read_set(out).manifest["files"]
    theirs = read_set(trained).manifest["files"]
    assert ours["layer_01/sae_weights.safetensors"] == theirs["layer_01/sae_weights.safetensors"]


def test_a_fit_of_other_rows_is_refused(tiny, tmp_path):
    rows, _ = training.pack_epochs(tiny, SETTINGS, 0, 32 * 8)
    coders, thresholds, record = training.run_fit(tiny, rows, SETTINGS, 0, tmp_path / "work")
    training.save_fit(tmp_path / "fitted", coders, thresholds, record, SETTINGS.dtype)
    with pytest.raises(Exception, match="other token rows"):
        training.train_transcoders(
            tiny,
            n_tokens=32 * 12,
            seed=0,
            out_dir=tmp_path / "set",
            work_dir=tmp_path / "work2",
            settings=SETTINGS,
            fitted_dir=tmp_path / "fitted",
        )


def test_the_reproducing_command_names_the_rows_a_time_budget_left_trained():
    command = "python -m m MODEL --max-fit-hours 2 --seed 0 --n-tokens 999 --out X"
    assert training._reproduce(command, 4096) == (
        "python -m m MODEL --seed 0 --out X --n-tokens 4096"
    )


def test_a_time_budget_too_short_for_one_step_is_a_clear_error(tiny, tmp_path):
    from dataclasses import replace

    rows, _ = training.pack_epochs(tiny, SETTINGS, 0, 32 * 8)
    hurried = replace(SETTINGS, max_fit_hours=-1.0)
    with pytest.raises(PermanentEngineError, match="No training step finished"):
        training.run_fit(tiny, rows, hurried, 0, tmp_path / "work")


def _topk_counts(pre, k):
    top = pre.topk(k, dim=-1)
    picks = top.indices[top.values > 0]  # zeros padding a quiet token's top k are not kept
    return torch.zeros(pre.shape[1]).scatter_add_(0, picks, torch.ones(picks.numel()))


def test_a_per_feature_threshold_fires_each_feature_as_often_as_topk_kept_it():
    # two kinds of token, one ten times the other's scale, each read by its own features:
    # TopK keeps 8 features on every token; one threshold for the layer keeps 8 per token
    # on average, nearly all of them on the loud tokens
    torch.manual_seed(0)
    pre = torch.relu(torch.randn(2000, 64))
    loud = torch.arange(2000) % 2 == 0
    pre[loud, 32:] = 0
    pre[~loud, :32] = 0
    pre[loud] *= 10
    topk = _topk_counts(pre, 8)
    layer_threshold = training._layer_threshold(pre, 8)
    per_feature = training._feature_thresholds(pre, 8, layer_threshold)
    fired = (pre > per_feature).sum(0).float()
    kept = topk > 0
    assert torch.equal(fired[kept], topk[kept])
    layer = (pre > layer_threshold).sum(0).float()
    assert float(layer.sum()) == pytest.approx(float(topk.sum()), rel=0.01)
    assert float(layer[32:].sum()) < 0.5 * float(topk[32:].sum())  # the quiet tokens starve


def test_a_feature_topk_never_kept_gets_a_threshold_it_does_not_cross_on_calibration():
    pre = torch.tensor([[5.0, 0.1, 0.0], [4.0, 0.2, 0.0], [3.0, 0.3, 0.0]])
    thresholds = training._feature_thresholds(pre, 1, 0.25)
    assert (pre[:, 1] > thresholds[1]).sum() == 0
    assert thresholds[1] == pytest.approx(0.3)  # its largest value, above the layer's 0.25
    assert training._feature_thresholds(pre, 1, 0.5)[1] == pytest.approx(0.5)


def test_zeros_padding_a_quiet_tokens_top_k_do_not_count_as_kept():
    # the second token has one positive value; TopK's k = 2 pads it with a zero
    pre = torch.tensor([[3.0, 2.0, 0.0], [0.0, 1.0, 0.0]])
    thresholds = training._feature_thresholds(pre, 2, 0.5)
    fired = (pre > thresholds).sum(0)
    assert fired.tolist() == [1, 2, 0]


def test_a_per_feature_threshold_survives_rounding_to_float16():
    torch.manual_seed(1)
    pre = torch.relu(torch.randn(500, 32)) * torch.logspace(-2, 2, 32)
    thresholds = training._feature_thresholds(pre, 4, training._layer_threshold(pre, 4))
    rounded = thresholds.half().float()
    assert torch.equal((pre > rounded).sum(0).float(), _topk_counts(pre, 4))


def test_a_fit_keeps_its_per_feature_thresholds_through_save_and_load(tmp_path):
    coders = {0: {"W_enc": torch.randn(4, 3), "b_enc": torch.zeros(4)}}
    thresholds = [torch.tensor([0.5, 1.0, 1.5, 2.0])]
    training.save_fit(tmp_path, coders, thresholds, {"rows_trained": 1}, "float32")
    _, back, record = training.load_fit(tmp_path)
    torch.testing.assert_close(back[0], thresholds[0])
    assert record == {"rows_trained": 1}


def test_an_unknown_threshold_rule_is_refused(tiny):
    with pytest.raises(PermanentEngineError, match="Unknown threshold rule"):
        training.calibrate_thresholds(tiny, {}, torch.zeros(1, 4, dtype=torch.long), 4, "token")


def test_recalibrating_a_set_by_feature_keeps_its_weights_and_says_what_changed(
    trained, tiny, tmp_path
):
    import shutil

    copy = shutil.copytree(trained, tmp_path / "set")
    before = json.loads((copy / "training.json").read_text())
    weights = before["model"]["weights_sha256"] = "the trained-on weights"
    (copy / "training.json").write_text(json.dumps(before))
    with pytest.raises(PermanentEngineError, match="recalibrate it on the model it was trained"):
        training.recalibrate(tiny, copy, "recal", "other weights", "a test", "feature")
    old = load_set_lenses(read_set(copy))
    after = training.recalibrate(tiny, copy, "recal", weights, "a test", "feature")
    new = load_set_lenses(read_set(copy))  # the new files' digests verify
    for a, b in zip(old, new, strict=True):
        assert torch.equal(a.W_enc, b.W_enc)
        assert torch.equal(a.W_dec, b.W_dec)
        assert b.threshold.unique().numel() > 1  # one threshold per feature now
    assert after["settings"]["threshold_rule"] == "feature"
    assert after["jumprelu"]["rule"] == training.THRESHOLD_RULES["feature"]
    assert after["recalibrated"]["why"] == "a test"
    assert after["recalibrated"]["before"]["jumprelu"] == before["jumprelu"]
    assert after["reproduce"].endswith("--threshold-rule feature")
    again = training.recalibrate(tiny, copy, "recal 2", weights, "twice", "layer")
    assert again["reproduce"].count("--threshold-rule") == 1
    assert again["reproduce"].endswith("--threshold-rule layer")
    assert again["recalibrated"]["before"]["recalibrated"]["why"] == "a test"
    kept = ("trainer", "rows_trained", "rows_token_sha256", "text", "command", "seed")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}
