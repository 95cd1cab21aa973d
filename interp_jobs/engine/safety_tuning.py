"""A safety-tuned second version of a chat model: a seeded LoRA fine-tune with ``peft``, shipped
as a small adapter and merged into the base model on demand.

Training (once, by a person; the record travels with the adapter):

1. Read the supervised set (``demo_data/safety_tuning/v1/train.jsonl``: refusals to harmful
   requests and helpful answers to harmless ones); its sha256 goes into the record.
2. Render each example with the model's chat template exactly as the checks render a probe
   (the default system prompt included) and append the answer and the end-of-turn token; the
   loss is the answer's tokens only (the prompt's labels are -100).
3. Wrap the base model with a LoRA adapter (rank ``rank`` on every attention and MLP
   projection), seed everything, and train ``epochs`` passes with AdamW, a fixed batch order
   drawn from the seed, linear warm-up and decay.
4. Save ``adapter_model.safetensors`` and ``adapter_config.json`` with ``training.json``: the
   command, data digest, seed, steps, per-epoch loss, wall time, threads, versions, and the
   sha256 of every adapter file.

Loading (every time): ``verify_adapter`` recomputes every file's sha256 against the record
(and, where the caller pins one, against a digest fixed in code), ``merged_model`` loads the
base, checks that its file is the one the adapter was trained on, merges the adapter into the
weights (``merge_and_unload``) and writes a plain Hugging Face directory in float32, so the only
difference between the two versions is the fine-tune.

    python -m interp_jobs.engine.safety_tuning train MODEL --format gguf \
        --data demo_data/safety_tuning/v1/train.jsonl --out interp_jobs/adapters/NAME
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError

RECORD_FILE = "training.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
MERGED_MARKER = "assay-merge.json"


@dataclass(frozen=True)
class TuningSettings:
    seed: int = 0
    epochs: int = 2
    lr: float = 1e-3
    batch_size: int = 8
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    warmup_fraction: float = 0.1
    weight_decay: float = 0.0
    first_layer: int = 6  # blocks below carry no adapter (frozen, computed once)
    precision: str = "float32"  # or "bfloat16": autocast for the matrix products (CPUs with AMX)
    threads: int = 2


@dataclass(frozen=True)
class Example:
    id: str
    prompt: str
    response: str


# --- data --------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_examples(path: Path) -> list[Example]:
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not item.get("prompt") or not item.get("response"):
            raise PermanentEngineError(f"{path} line {number}: needs a prompt and a response")
        rows.append(Example(str(item.get("id", number)), item["prompt"], item["response"]))
    if not rows:
        raise PermanentEngineError(f"{path} holds no examples")
    return rows


def encode_example(loaded, example: Example) -> tuple[list[int], list[int]]:
    """Token ids of the templated conversation and its labels (-100 outside the answer).

    The prompt is rendered by ``loaded.chat_prompt``, the function every check uses, so the
    model is tuned on exactly the context it is later probed in."""
    tokenizer = loaded.tokenizer
    prompt = loaded.chat_prompt(example.prompt)
    end = _end_of_turn(tokenizer)
    add_special = not loaded.has_chat_template
    prompt_ids = tokenizer(prompt, add_special_tokens=add_special)["input_ids"]
    answer_ids = tokenizer(example.response + end, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids


def _end_of_turn(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_end|>" in template:
        return "<|im_end|>"
    return tokenizer.eos_token or ""


def batch_order(n: int, batch_size: int, epochs: int, seed: int) -> list[list[int]]:
    """The batches of every epoch: a seeded shuffle per epoch, cut into batch_size pieces."""
    rng = random.Random(seed)  # noqa: S311 - seeded data order, not cryptography
    batches = []
    for _ in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        batches += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return batches


# --- training ------------------------------------------------------------------------------------


def lora_config(settings: TuningSettings, n_layers: int):
    from peft import LoraConfig

    if not 0 <= settings.first_layer < n_layers:
        raise PermanentEngineError(f"first_layer must be in 0..{n_layers - 1}")
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(TARGET_MODULES),
        layers_to_transform=list(range(settings.first_layer, n_layers)),
        layers_pattern="layers",
        bias="none",
        task_type="CAUSAL_LM",
    )


def _plain(loaded):
    """The model as plain float32 modules (a GGUF model is marked quantized, which peft and
    save_pretrained refuse, although its weights are already dequantized tensors)."""
    from interp_jobs.engine.loading.export import _plain_copy
    from interp_jobs.engine.loading.models import DTYPES

    return _plain_copy(loaded.model, DTYPES["float32"]).to(loaded.device)


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_adapter(
    loaded,
    examples: Sequence[Example],
    settings: TuningSettings,
    *,
    progress: Callable[[int, int, float], None] | None = None,
):
    """Train a LoRA adapter on a copy of ``loaded.model``; returns (peft model, per-epoch mean
    loss, number of optimiser steps).

    Layers below ``first_layer`` are frozen and carry no adapter, so their output is the same
    at every step: it is computed once per example (``frozen_prefix``) and each step runs only
    the adapted layers, forward and backward. The language-model head is applied only where a
    label is, so the loss costs what the answer costs, not the prompt.
    """
    import torch
    from peft import get_peft_model

    torch.set_num_threads(settings.threads)
    _seed_everything(settings.seed)
    plain = _plain(loaded)
    model = get_peft_model(plain, lora_config(settings, plain.config.num_hidden_layers))
    encoded = [encode_example(loaded, example) for example in examples]
    prefix = frozen_prefix(loaded, plain, encoded, settings.first_layer)
    batches = batch_order(len(encoded), settings.batch_size, settings.epochs, settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = max(1, int(settings.warmup_fraction * len(batches)))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: _schedule(step, len(batches), warmup)
    )
    model.train()
    losses: list[float] = []
    with _top_layers_only(plain, settings.first_layer):
        for step, rows in enumerate(batches):
            with _autocast(settings.precision, loaded.device):
                loss = _step_loss(plain, [prefix[i] for i in rows], [encoded[i][1] for i in rows])
            loss.backward()
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if progress:
                progress(step + 1, len(batches), losses[-1])
    model.eval()
    per_epoch = math.ceil(len(encoded) / settings.batch_size)
    epoch_loss = [
        sum(losses[i : i + per_epoch]) / len(losses[i : i + per_epoch])
        for i in range(0, len(losses), per_epoch)
    ]
    return model, epoch_loss, len(batches)


def frozen_prefix(loaded, plain, encoded, first_layer: int) -> list:
    """Each example's residual stream entering block ``first_layer`` (unpadded, one tensor of
    shape (tokens, d_model) per example), computed once under no_grad."""
    import torch

    from interp_jobs.engine.hooks import format_hook_name, run_to
    from interp_jobs.engine.loading.models import LoadedModel

    view = LoadedModel(
        model=plain,
        tokenizer=loaded.tokenizer,
        family=loaded.family,
        n_layers=loaded.n_layers,
        d_model=loaded.d_model,
        device=loaded.device,
        dtype="float32",
        model_type=loaded.model_type,
    )
    hook = format_hook_name(first_layer, "resid_pre")
    out = []
    for ids, _ in encoded:
        tokens = torch.tensor([ids], device=loaded.device)
        x = run_to(view, tokens, torch.ones_like(tokens), [hook])[hook]
        out.append(x[0].detach().clone())
    return out


def _autocast(precision: str, device: str):
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    if precision != "bfloat16":
        raise PermanentEngineError(f"precision must be float32 or bfloat16, not {precision!r}")
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


@contextmanager
def _top_layers_only(plain, first_layer: int) -> Iterator[None]:
    """Within the block the decoder runs only blocks ``first_layer`` onwards, reading its input
    from ``inputs_embeds`` (the cached frozen prefix)."""
    import torch

    decoder = plain.model
    layers = decoder.layers
    decoder.layers = torch.nn.ModuleList(list(layers)[first_layer:])
    try:
        yield
    finally:
        decoder.layers = layers


def _step_loss(plain, prefixes: list, labels: list[list[int]]):
    import torch
    import torch.nn.functional as F

    width = max(len(x) for x in prefixes)
    d_model = prefixes[0].shape[-1]
    device = prefixes[0].device
    hidden = torch.zeros((len(prefixes), width, d_model), device=device)
    mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)
    targets = torch.full((len(prefixes), width), -100, dtype=torch.long, device=device)
    for row, (x, label) in enumerate(zip(prefixes, labels, strict=True)):
        hidden[row, : len(x)] = x
        mask[row, : len(x)] = 1
        targets[row, : len(label)] = torch.tensor(label, device=device)
    out = plain.model(inputs_embeds=hidden, attention_mask=mask, use_cache=False)
    shifted = targets[:, 1:]
    keep = shifted != -100  # position t predicts token t + 1
    logits = plain.lm_head(out.last_hidden_state[:, :-1][keep]).float()
    return F.cross_entropy(logits, shifted[keep])


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def adapter_digests(directory: Path) -> dict[str, str]:
    return {name: file_sha256(Path(directory) / name) for name in ADAPTER_FILES}


def adapter_digest(directory: Path) -> str:
    """One digest for the adapter: sha256 of its files' ``sha256sum`` listing (sorted)."""
    listing = "".join(
        f"{sha}  {name}\n" for name, sha in sorted(adapter_digests(directory).items())
    )
    return hashlib.sha256(listing.encode()).hexdigest()


def library_versions() -> dict[str, str]:
    import importlib.metadata

    versions = {}
    for name in ("torch", "transformers", "peft", "safetensors"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def train_and_save(
    model_path: Path,
    fmt: str,
    data_path: Path,
    out_dir: Path,
    settings: TuningSettings,
    *,
    command: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """Train, save the adapter and its record atomically under ``out_dir``; returns the record."""
    from interp_jobs.engine.loading.models import load_model

    started, cpu_started = time.monotonic(), _cpu_seconds()
    loaded = load_model(model_path, fmt, dtype="float32")
    examples = read_examples(data_path)
    load_seconds = time.monotonic() - started

    def report(step: int, total: int, loss: float) -> None:
        if step == 1 or step % 10 == 0 or step == total:
            log(f"step {step}/{total} loss {loss:.4f} ({time.monotonic() - started:.0f} s)")

    model, epoch_loss, steps = train_adapter(loaded, examples, settings, progress=report)
    train_seconds = time.monotonic() - started - load_seconds
    cpu_seconds = _cpu_seconds() - cpu_started
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    model.save_pretrained(staging, safe_serialization=True)
    record = {
        "what": "LoRA safety fine-tune (peft), merged into the base model by merged_model()",
        "command": command,
        "base_model": {"file": Path(model_path).name, "format": fmt},
        "base_model_sha256": file_sha256(model_path) if Path(model_path).is_file() else "",
        "data": {
            "path": str(data_path),
            "sha256": file_sha256(data_path),
            "n_examples": len(examples),
        },
        "settings": asdict(settings),
        "target_modules": list(TARGET_MODULES),
        "loss_on": "answer tokens only (prompt labels -100); chat template as the checks use it",
        "steps": steps,
        "loss_per_epoch": epoch_loss,
        "seconds": {
            "load": round(load_seconds, 1),
            "train": round(train_seconds, 1),
            "cpu_total": round(cpu_seconds, 1),
            "load_average_at_end": list(os.getloadavg()),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": settings.threads,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "libraries": library_versions(),
        "files": adapter_digests(staging),
    }
    record["adapter_digest"] = adapter_digest(staging)
    (staging / RECORD_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (staging / "README.md").unlink(missing_ok=True)  # peft's model-card stub says nothing true
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.rename(staging, out_dir)
    return record


# --- loading and merging -------------------------------------------------------------------------


def verify_adapter(directory: Path, *, expected_digest: str | None = None) -> dict:
    """The adapter's record, after checking every file against it (and against a digest the
    caller pins in code, so an edited record cannot vouch for edited weights)."""
    directory = Path(directory)
    record_path = directory / RECORD_FILE
    if not record_path.is_file():
        raise PermanentEngineError(f"{directory} has no {RECORD_FILE}; it is not a shipped adapter")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    missing = [name for name in ADAPTER_FILES if not (directory / name).is_file()]
    if missing:
        raise PermanentEngineError(f"adapter {directory} lacks {', '.join(missing)}")
    found = adapter_digests(directory)
    changed = sorted(name for name, sha in found.items() if record["files"].get(name) != sha)
    if changed:
        raise PermanentEngineError(
            f"adapter {directory}: {', '.join(changed)} do not match the sha256 in {RECORD_FILE}; "
            "the adapter was modified after training. Restore it from version control."
        )
    digest = adapter_digest(directory)
    if record.get("adapter_digest") != digest or (expected_digest and digest != expected_digest):
        raise PermanentEngineError(
            f"adapter {directory} has digest {digest}, expected "
            f"{expected_digest or record.get('adapter_digest')}; it is not the shipped adapter"
        )
    return record


def merged_model(
    base_path: Path,
    fmt: str,
    adapter_dir: Path,
    out_dir: Path,
    *,
    expected_digest: str | None = None,
) -> Path:
    """A Hugging Face directory (float32) holding the base weights with the adapter merged in;
    written atomically and reused when it already holds this merge."""
    out_dir = Path(out_dir)
    record = verify_adapter(adapter_dir, expected_digest=expected_digest)
    marker = {
        "base_sha256": record.get("base_model_sha256", ""),
        "adapter_digest": record["adapter_digest"],
    }
    if (out_dir / "config.json").is_file() and _read_marker(out_dir) == marker:
        return out_dir
    base_sha = file_sha256(base_path) if Path(base_path).is_file() else ""
    if record.get("base_model_sha256") and base_sha != record["base_model_sha256"]:
        raise PermanentEngineError(
            f"the adapter was trained on a base model with sha256 {record['base_model_sha256']}, "
            f"not on {base_path} ({base_sha})"
        )
    return _write_merge(base_path, fmt, adapter_dir, out_dir, marker)


def _read_marker(out_dir: Path) -> dict | None:
    try:
        return json.loads((out_dir / MERGED_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_merge(base_path: Path, fmt: str, adapter_dir: Path, out_dir: Path, marker: dict):
    from peft import PeftModel

    from interp_jobs.engine.loading.models import load_model

    loaded = load_model(base_path, fmt, dtype="float32")
    merged = PeftModel.from_pretrained(_plain(loaded), str(adapter_dir)).merge_and_unload()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        merged.save_pretrained(staging, safe_serialization=True)
        loaded.tokenizer.save_pretrained(staging)
        (staging / MERGED_MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.rename(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# --- command line ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m interp_jobs.engine.safety_tuning")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a LoRA adapter and write its record")
    train.add_argument("model", type=Path)
    train.add_argument("--format", default="gguf", choices=("gguf", "hf_dir"))
    train.add_argument("--data", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True)
    defaults = TuningSettings()
    for name, value in asdict(defaults).items():
        train.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    merge = sub.add_parser("merge", help="merge a verified adapter into its base model")
    merge.add_argument("model", type=Path)
    merge.add_argument("--format", default="gguf", choices=("gguf", "hf_dir"))
    merge.add_argument("--adapter", type=Path, required=True)
    merge.add_argument("--out", type=Path, required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "merge":
        print(merged_model(args.model, args.format, args.adapter, args.out))
        return 0
    settings = TuningSettings(**{k: getattr(args, k) for k in asdict(TuningSettings())})
    command = "python -m interp_jobs.engine.safety_tuning " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    record: dict[str, Any] = train_and_save(
        args.model, args.format, args.data, args.out, settings, command=command
    )
    print(json.dumps({k: record[k] for k in ("steps", "loss_per_epoch", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
