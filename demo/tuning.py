"""The demo's second model version: the base with a safety LoRA merged in.

For SmolLM2 the adapter is shipped (``interp_jobs/adapters/smollm2-135m-safety-lora-v1``, its
training command and record in ``training.json``); the demo verifies its digest against the one
pinned here and merges it (about half a minute) instead of training it (see the record for how
long training took). For another model (``--model``) the demo trains a LoRA on the same data
here, which is quick only for small models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from demo.flow import DemoModel

SHIPPED_ADAPTER = (
    Path(settings.BASE_DIR) / "interp_jobs" / "adapters" / "smollm2-135m-safety-lora-v1"
)
# sha256 of the adapter's files' sha256sum listing (safety_tuning.adapter_digest), pinned so an
# edited adapter and an edited record cannot vouch for each other.
SHIPPED_DIGEST = "b2ea43f5e7469152c144e1ed762cbbb58b49c6bbe505b7c0ed422f018e6c824d"
TRAINING_DATA = Path(settings.BASE_DIR) / "demo_data" / "safety_tuning" / "v1" / "train.jsonl"


@dataclass(frozen=True)
class Tuned:
    model: DemoModel
    note: str
    record: dict


def _version(base: DemoModel, record: dict) -> str:
    return f"{base.version}-safety-lora-{record['adapter_digest'][:12]}"


def merge(base: DemoModel, adapter: Path, store: Path, *, pinned: str | None) -> Tuned:
    from interp_jobs.engine.safety_tuning import merged_model, verify_adapter

    record = verify_adapter(adapter, expected_digest=pinned)
    target = store / f"{base.family}-safety-lora-{record['adapter_digest'][:12]}"
    merged_model(base.path, base.format, adapter, target, expected_digest=pinned)
    seconds = record["seconds"]
    note = (
        f"adapter {adapter.name} (digest {record['adapter_digest'][:12]}, verified) merged into "
        f"{base.path.name}; training it here would take about "
        f"{quiet_training_minutes(record):.0f} minutes on two quiet cores "
        f"({seconds['train'] / 60:.0f} min wall on a shared machine, loss "
        f"{record['loss_per_epoch'][0]:.2f} -> {record['loss_per_epoch'][-1]:.2f})"
    )
    return Tuned(DemoModel(base.family, _version(base, record), target, "hf_dir"), note, record)


def quiet_training_minutes(record: dict) -> float:
    """CPU seconds over the cores it used: the wall time on a machine with nothing else."""
    seconds = record["seconds"]
    threads = max(1, int(record["settings"].get("threads", 1)))
    return seconds.get("cpu_total", seconds["train"]) / threads / 60


def train_and_merge(base: DemoModel, store: Path) -> Tuned:
    """Train a LoRA on the demo data here (for a model without a shipped adapter)."""
    from interp_jobs.engine.safety_tuning import TuningSettings, train_and_save

    adapter = store / f"{base.family}-safety-lora-trained"
    if not (adapter / "training.json").is_file():
        train_and_save(
            base.path,
            base.format,
            TRAINING_DATA,
            adapter,
            TuningSettings(epochs=1, batch_size=16, first_layer=0),
            command="manage.py demo (trained in the demo for a model without a shipped adapter)",
            log=lambda line: None,
        )
    made = merge(base, adapter, store, pinned=None)
    record = json.loads((adapter / "training.json").read_text())
    return Tuned(
        made.model, f"{made.note} (trained here in {record['seconds']['train']:.0f} s)", record
    )
