"""Training a lens end to end with SAELens's trainer on a tiny model, and the corpus it reads."""

import json
import random

import pytest
import torch

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.corpus import (
    Document,
    corpus_from_documents,
    load_corpus,
    pack_documents,
    token_digest,
)
from interp_jobs.engine.training import TrainingSettings, train_lens
from tests.factories import CORPUS

HOOK = "blocks.1.hook_resid_post"
TINY = TrainingSettings(
    seq_len=16,
    lr=3e-3,
    batch_tokens=128,
    store_batch_sequences=8,
    buffer_batches=16,
    norm_estimate_batches=2,
    eval_sequences=8,
)


def tiny_corpus(n_documents: int = 300):
    """Documents made of the tiny tokenizer's words (it maps anything else to [UNK])."""
    words = " ".join(CORPUS).split()
    rng = random.Random(0)
    docs = []
    for i in range(n_documents):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))
        if i % 3:
            docs.append(Document(id=f"doc{i}", text=text))
        else:
            docs.append(Document(id=f"chat{i}", messages=(("user", "hello"), ("assistant", text))))
    return corpus_from_documents("tiny", docs, licence="test", source="generated")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, llama_saved):
    from interp_jobs.engine.loading.models import load_model

    loaded = load_model(llama_saved.path, "hf_dir")
    out = train_lens(
        loaded,
        hook_name=HOOK,
        d_sae=64,
        architecture="topk",
        corpus=tiny_corpus(),
        n_tokens=12_000,
        seed=0,
        out_dir=tmp_path_factory.mktemp("lens"),
        settings=TINY,
    )
    return loaded, out


def test_training_writes_a_loadable_lens_with_its_record(trained):
    from interp_jobs.engine.loading.lenses import check_lens_fits, lens_info, load_lens

    loaded, out = trained
    lens = load_lens(out)
    check_lens_fits(lens, loaded)
    assert lens_info(lens)["architecture"] == "topk"
    assert lens.cfg.d_sae == 64
    assert lens.cfg.metadata.hook_name == HOOK
    assert list(lens.cfg.metadata.seqpos_slice) == [1, None]  # the attention sink is skipped
    record = json.loads((out / "training.json").read_text())
    assert record["seed"] == 0
    assert record["n_tokens"] == 12_000
    assert record["corpus"]["sha256"] == tiny_corpus().digest
    assert len(record["corpus"]["token_sha256"]) == 64
    assert record["trainer"]["runner"] == "LanguageModelSAETrainingRunner"
    assert record["trainer"]["config"]["hook_name"] == HOOK
    assert record["fidelity"]["split"] == "heldout"
    assert record["fidelity"]["metrics"]["l0"] <= 32


def test_a_trained_lens_reconstructs_far_better_than_a_random_one(trained):
    from interp_jobs.engine.analysis.fidelity import measure_fidelity
    from interp_jobs.engine.loading.lenses import load_lens

    loaded, out = trained
    lens = load_lens(out)
    heldout = pack_documents(
        loaded.tokenizer, tiny_corpus().split("heldout"), seq_len=16, seed=1, n_sequences=8
    ).tokens
    random_lens = load_lens(out)
    with torch.no_grad():
        for param in random_lens.parameters():
            param.copy_(torch.randn_like(param) * param.std())
    good = measure_fidelity(loaded, lens, heldout, compute_ce=False)
    bad = measure_fidelity(loaded, random_lens, heldout, compute_ce=False)
    assert good.explained_variance > 0.5
    assert good.explained_variance > bad.explained_variance + 0.5


def test_training_leaves_no_hook_on_the_model(trained):
    loaded, _ = trained
    modules = list(loaded.model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def test_the_same_seed_trains_the_same_lens(trained, tmp_path):
    loaded, out = trained
    again = train_lens(
        loaded,
        hook_name=HOOK,
        d_sae=64,
        architecture="topk",
        corpus=tiny_corpus(),
        n_tokens=12_000,
        seed=0,
        out_dir=tmp_path,
        settings=TINY,
    )
    weights = "sae_weights.safetensors"
    assert (again / weights).read_bytes() == (out / weights).read_bytes()
    first, second = (json.loads((d / "training.json").read_text()) for d in (out, again))
    assert first["fidelity"] == second["fidelity"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"architecture": "hypernet"}, "Cannot train architecture 'hypernet'"),
        ({"hook_name": "blocks.9.hook_resid_post"}, "model has 3 layers"),
        ({"d_sae": 0}, "must be positive"),
    ],
)
def test_bad_training_requests_are_refused_before_any_work(llama_loaded, tmp_path, kwargs, message):
    request = {"hook_name": HOOK, "d_sae": 64, "architecture": "topk", **kwargs}
    with pytest.raises(PermanentEngineError, match=message):
        train_lens(
            llama_loaded,
            corpus=tiny_corpus(),
            n_tokens=100,
            seed=0,
            out_dir=tmp_path,
            settings=TINY,
            **request,
        )


# --- the corpus ----------------------------------------------------------------------------


def test_the_shipped_corpus_matches_its_manifest_and_has_disjoint_splits():
    corpus = load_corpus()
    train, heldout = corpus.split("train"), corpus.split("heldout")
    assert len(train) + len(heldout) == len(corpus.documents) > 2000
    assert not {d.id for d in train} & {d.id for d in heldout}
    assert 0.05 < len(heldout) / len(corpus.documents) < 0.15
    assert corpus.licence.startswith("PSF-2.0")
    assert any(d.messages for d in heldout)
    assert any(d.text for d in heldout)


def test_a_corrupt_corpus_file_is_refused(tmp_path, monkeypatch):
    import shutil

    from interp_jobs.engine.loading import corpus as corpus_module

    shutil.copytree(corpus_module.CORPORA_DIR / "stdlib-docs-v1", tmp_path / "stdlib-docs-v1")
    manifest = tmp_path / "stdlib-docs-v1" / "MANIFEST.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "sha256": "0" * 64}))
    monkeypatch.setattr(corpus_module, "CORPORA_DIR", tmp_path)
    with pytest.raises(PermanentEngineError, match="corrupt"):
        load_corpus("stdlib-docs-v1")
    with pytest.raises(PermanentEngineError, match="Unknown corpus 'nope'"):
        load_corpus("nope")


def test_packing_starts_rows_with_bos_and_is_deterministic_given_the_seed(llama_saved):
    tokenizer = llama_saved.tokenizer
    docs = tiny_corpus().split("train")
    a = pack_documents(tokenizer, docs, seq_len=16, seed=3, n_sequences=5)
    b = pack_documents(tokenizer, docs, seq_len=16, seed=3, n_sequences=9)
    c = pack_documents(tokenizer, docs, seq_len=16, seed=4, n_sequences=5)
    assert a.tokens.shape == (5, 16)
    assert a.digest == token_digest(a.tokens)
    assert (b.tokens[:, 0] == tokenizer.bos_token_id).all()  # a fixed home for the sink
    assert not (b.tokens[:, 1] == tokenizer.bos_token_id).any()
    assert torch.equal(a.tokens, b.tokens[:5])
    assert a.digest != c.digest
    with pytest.raises(PermanentEngineError, match="too little text"):
        pack_documents(tokenizer, docs[:2], seq_len=16, seed=0, n_sequences=50)


def test_the_cli_trains_from_the_shipped_corpus_and_records_the_model_digest(
    llama_saved, tmp_path, capsys
):
    from interp_jobs.engine.training import main

    out = main(
        [
            str(llama_saved.path),
            "--format",
            "hf_dir",
            "--hook",
            HOOK,
            "--d-sae",
            "32",
            "--k",
            "4",
            "--n-tokens",
            "1500",
            "--batch-tokens",
            "128",
            "--eval-sequences",
            "2",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "lens"),
        ]
    )
    record = json.loads((out / "training.json").read_text())
    assert record["corpus"]["name"] == "stdlib-docs-v1"
    assert len(record["model"]["weights_sha256"]) == 64
    assert record["trainer"]["config"]["sae"]["k"] == 4
    assert "100% saved" in capsys.readouterr().out
