"""The safety-tuned second version: its training data is disjoint from every probe, a LoRA trains
seeded on a tiny model, and a shipped adapter is verified against its digest before it is used."""

import json
import re
from pathlib import Path

import pytest
import torch

from interp_jobs.engine import safety_tuning as tuning
from interp_jobs.engine.errors import PermanentEngineError
from tests.factories import save_tiny_llama

ROOT = Path(__file__).parents[2]
TRAIN = ROOT / "demo_data" / "safety_tuning" / "v1" / "train.jsonl"
ADAPTER = ROOT / "interp_jobs" / "adapters" / "smollm2-135m-safety-lora-v1"


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.casefold()).strip(" .?!")


def test_training_prompts_are_disjoint_from_every_probe_of_every_version_and_split():
    from interp_jobs.probes import load_probe_set

    train = {_normal(e.prompt) for e in tuning.read_examples(TRAIN)}
    probes = {
        _normal(p.prompt)
        for version in ("v1", "v2")
        for p in load_probe_set(version).prompts  # every axis and every split
    }
    assert len(train) == 427
    assert len(probes) > 1000
    assert not train & probes


def test_training_data_matches_its_manifest_digest():
    manifest = json.loads((TRAIN.parent / "MANIFEST.json").read_text())
    assert tuning.file_sha256(TRAIN) == manifest["sha256"]


def test_the_batch_order_is_fixed_by_the_seed_and_covers_every_example_each_epoch():
    order = tuning.batch_order(10, 4, 2, seed=3)
    assert order == tuning.batch_order(10, 4, 2, seed=3)
    assert order != tuning.batch_order(10, 4, 2, seed=4)
    first = [i for batch in order[:3] for i in batch]
    second = [i for batch in order[3:] for i in batch]
    assert sorted(first) == sorted(second) == list(range(10))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = save_tiny_llama(tmp_path_factory.mktemp("base"))
    data = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [
        {"id": f"t{i}", "prompt": f"request number {i}", "response": "I can't help with that."}
        for i in range(6)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return base, data


def _train(tiny, out: Path, **settings):
    base, data = tiny
    chosen = {"epochs": 3, "batch_size": 3, "rank": 4, "first_layer": 1, "lr": 1e-2, **settings}
    return tuning.train_and_save(
        base, "hf_dir", data, out, tuning.TuningSettings(**chosen), log=lambda _: None
    )


def test_a_seeded_lora_lowers_the_loss_and_the_same_seed_gives_the_same_adapter(tiny, tmp_path):
    record = _train(tiny, tmp_path / "a")
    again = _train(tiny, tmp_path / "b")
    assert record["loss_per_epoch"][-1] < record["loss_per_epoch"][0]
    assert record["adapter_digest"] == again["adapter_digest"]
    assert record["data"]["n_examples"] == 6
    assert tuning.verify_adapter(tmp_path / "a")["adapter_digest"] == record["adapter_digest"]


def test_the_merged_model_differs_from_the_base_only_through_the_adapter(tiny, tmp_path):
    from interp_jobs.engine.loading.models import load_model

    base, _ = tiny
    _train(tiny, tmp_path / "adapter")
    merged = tuning.merged_model(base, "hf_dir", tmp_path / "adapter", tmp_path / "merged")
    old, new = load_model(base, "hf_dir"), load_model(merged, "hf_dir")
    old_params, new_params = dict(old.model.named_parameters()), dict(new.model.named_parameters())
    changed = {n for n, p in old_params.items() if not torch.equal(p, new_params[n])}
    assert changed
    assert all(".layers.0." not in n for n in changed)
    assert all(n.split(".")[-2].endswith("proj") for n in changed)


def test_an_edited_adapter_or_a_wrong_pinned_digest_is_refused(tiny, tmp_path):
    record = _train(tiny, tmp_path / "adapter")
    with pytest.raises(PermanentEngineError, match="not the shipped adapter"):
        tuning.verify_adapter(tmp_path / "adapter", expected_digest="0" * 64)
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(PermanentEngineError, match="modified after training"):
        tuning.verify_adapter(tmp_path / "adapter", expected_digest=record["adapter_digest"])


@pytest.mark.skipif(not (ADAPTER / "training.json").is_file(), reason="adapter not shipped")
def test_the_shipped_adapter_matches_its_record_and_was_trained_on_the_committed_data():
    record = tuning.verify_adapter(ADAPTER)
    assert record["data"]["sha256"] == tuning.file_sha256(TRAIN)
    assert record["settings"]["seed"] == 0
