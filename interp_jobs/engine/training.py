"""Train a lens (an SAE) on a loaded model with SAELens's own trainer, on a local corpus.

SAELens's ``LanguageModelSAETrainingRunner`` does the training: its ActivationsStore reads
activations through a ``HookedProxyLM`` and its SAETrainer fits the SAE. We only change how
the proxy finds its hook point. The stock ``HookedProxyLM.setup`` names hook points after HF
modules (``model.layers.14``) and registers forward hooks it never removes; our subclass
exposes the SAELens name the lens will be registered under (``blocks.14.hook_resid_post``),
so the saved config needs no renaming, and attaches it through ``hooks.replace_activation``,
which removes it when training ends, because a hook left on a cached model would alter
every later measurement.

Every training row starts with the BOS token (see corpus.pack_documents) and that first
position is left out of training and evaluation (``seqpos_slice=(1, None)``, recorded in the
lens config): it is the attention sink, whose residual norm in SmolLM2 is about 140 times that
of any other token, and one such vector would dominate both the loss and the explained
variance.

    python -m interp_jobs.engine.training MODEL --format gguf --hook blocks.14.hook_resid_post \
        --d-sae 4096 --architecture topk --k 32 --n-tokens 400000 --seed 0 --out DIR
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import parse_hook_name, replace_activation, resolve_hook
from interp_jobs.engine.loading.corpus import Corpus, TokenBatch, pack_documents

TRAINING_FILE = "training.json"
SEQPOS_SLICE = (1, None)  # skip the attention sink at position 0 (see the module docstring)
# Options each architecture needs beyond d_in/d_sae; anything else SAELens accepts may be given.
ARCHITECTURES = {
    "topk": {"k": 32},
    "batchtopk": {"k": 32},
    "standard": {},
    "jumprelu": {},
    "gated": {},
}
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class TrainingSettings:
    """Optimiser and batching settings; the defaults suit a few hundred thousand CPU tokens."""

    seq_len: int = 128
    lr: float = 1e-3
    # Small batches: a few hundred thousand tokens must still give over a thousand steps.
    batch_tokens: int = 256
    store_batch_sequences: int = 8
    buffer_batches: int = 128  # SAELens's shuffle buffer, in sequences: 128 x 127 tokens
    decay_fraction: float = 0.2  # linear decay of the lr over the last fifth of training
    norm_estimate_batches: int = 32
    dead_after_tokens: int = 50_000  # silent this long: TopK's auxiliary loss revives it
    eval_sequences: int = 64  # held-out sequences for the fidelity written to training.json
    sae_options: Mapping[str, Any] = field(default_factory=dict)


def _ignore_progress(fraction: float, stage: str) -> None:
    return None


def train_lens(
    loaded,
    *,
    hook_name: str,
    d_sae: int,
    architecture: str,
    corpus: Corpus,
    n_tokens: int,
    seed: int,
    out_dir: str | Path,
    settings: TrainingSettings | None = None,
    model_info: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Train, save in SAELens's on-disk format with a ``training.json`` record; return the dir."""
    import torch

    settings = settings or TrainingSettings()
    progress = progress or _ignore_progress
    _check_request(loaded, hook_name, d_sae, architecture, n_tokens)
    torch.manual_seed(seed)  # SAE initialisation and SAELens's buffer shuffles draw from it
    batch = _training_tokens(loaded, corpus, n_tokens, seed, settings)
    started = (time.perf_counter(), time.process_time())
    sae, runner_cfg = _fit(
        loaded, hook_name, d_sae, architecture, batch, n_tokens, settings, progress
    )
    # CPU time too: wall time on a shared machine says more about the neighbours than the job.
    seconds = (time.perf_counter() - started[0], time.process_time() - started[1])
    out = Path(out_dir)
    sae.save_inference_model(out)
    record = _record(loaded, corpus, batch, runner_cfg, seed, n_tokens, seconds, model_info)
    record["fidelity"] = _measure(loaded, out, corpus, seed, settings, progress)
    (out / TRAINING_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    progress(1.0, "saved")
    return out


def _check_request(loaded, hook_name: str, d_sae: int, architecture: str, n_tokens: int) -> None:
    parse_hook_name(hook_name, n_layers=loaded.n_layers)
    resolve_hook(loaded, hook_name)
    if architecture not in ARCHITECTURES:
        raise PermanentEngineError(
            f"Cannot train architecture {architecture!r}; use one of: {', '.join(ARCHITECTURES)}."
        )
    if d_sae < 1 or n_tokens < 1:
        raise PermanentEngineError("d_sae and n_tokens must be positive integers.")


def _training_tokens(
    loaded, corpus: Corpus, n_tokens: int, seed: int, settings: TrainingSettings
) -> TokenBatch:
    """Just enough training-split sequences for ``n_tokens`` trained positions.

    SAELens loops over them again if norm estimation and its buffer need a few more, so the
    recorded digest covers every token the lens saw.
    """
    per_sequence = settings.seq_len - 1  # position 0 is sliced off
    wanted = math.ceil(n_tokens / per_sequence)
    docs = corpus.split("train")
    available = pack_documents(loaded.tokenizer, docs, seq_len=settings.seq_len, seed=seed)
    if len(available.tokens) < wanted:
        return available  # fewer sequences than tokens asked for: SAELens runs more epochs
    return pack_documents(
        loaded.tokenizer, docs, seq_len=settings.seq_len, seed=seed, n_sequences=wanted
    )


def _sae_config(loaded, d_sae: int, architecture: str, settings: TrainingSettings):
    from sae_lens.registry import get_sae_training_class

    _, config_class = get_sae_training_class(architecture)
    options = {**ARCHITECTURES[architecture], **settings.sae_options}
    try:
        # Scaling inputs to norm sqrt(d_in) lets one learning rate fit every model; SAELens
        # folds the factor into the weights at the end, so the saved lens reads raw activations.
        return config_class(
            d_in=loaded.d_model,
            d_sae=d_sae,
            normalize_activations="expected_average_only_in",
            **options,
        )
    except TypeError as exc:
        raise PermanentEngineError(f"Bad options for a {architecture} lens: {exc}") from exc


def _runner_config(
    loaded, hook_name: str, sae_cfg, n_tokens: int, settings: TrainingSettings, prepend_bos: bool
):
    from sae_lens import LanguageModelSAERunnerConfig, LoggingConfig

    steps = max(1, n_tokens // settings.batch_tokens)
    return LanguageModelSAERunnerConfig(
        sae=sae_cfg,
        model_name=loaded.model_type,
        model_class_name="AutoModelForCausalLM",
        hook_name=hook_name,
        is_dataset_tokenized=True,
        streaming=False,
        context_size=settings.seq_len,
        seqpos_slice=SEQPOS_SLICE,
        prepend_bos=prepend_bos,
        training_tokens=n_tokens,
        train_batch_size_tokens=settings.batch_tokens,
        store_batch_size_prompts=settings.store_batch_sequences,
        n_batches_in_buffer=settings.buffer_batches,
        device=loaded.device,
        dtype="float32",
        lr=settings.lr,
        lr_decay_steps=int(steps * settings.decay_fraction),
        n_batches_for_norm_estimate=settings.norm_estimate_batches,
        dead_feature_window=max(1, settings.dead_after_tokens // settings.batch_tokens),
        feature_sampling_window=max(1, steps),
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        n_checkpoints=0,
        verbose=False,
        exclude_special_tokens=False,
    )


def _fit(
    loaded,
    hook_name,
    d_sae,
    architecture,
    batch: TokenBatch,
    n_tokens: int,
    settings: TrainingSettings,
    progress: Progress,
):
    from datasets import Dataset
    from sae_lens import LanguageModelSAETrainingRunner

    sae_cfg = _sae_config(loaded, d_sae, architecture, settings)
    prepend_bos = loaded.tokenizer.bos_token_id is not None
    cfg = _runner_config(loaded, hook_name, sae_cfg, n_tokens, settings, prepend_bos)
    dataset = Dataset.from_dict({"input_ids": batch.tokens.tolist()})
    with proxy_lm(loaded, hook_name) as proxy:
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=proxy)
        # SAETrainer has no progress callback, so count the batches it draws instead.
        runner.activations_store = _CountingProvider(runner.activations_store, n_tokens, progress)
        sae = runner.run()
    return sae, cfg.to_dict()


class _CountingProvider:
    """Hands SAELens's activation batches to its trainer and reports training progress."""

    def __init__(self, store, total: int, progress: Progress):
        self.store, self.total, self.progress, self.seen = store, total, progress, 0

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        batch = next(self.store)
        self.seen += batch.shape[0]
        self.progress(0.9 * min(self.seen / self.total, 1.0), "training")
        return batch


@contextmanager
def proxy_lm(loaded, hook_name: str):
    """A SAELens ``HookedProxyLM`` over ``loaded`` exposing one hook point by its SAELens name."""
    proxy = _proxy_class()(loaded, hook_name)
    with replace_activation(loaded, hook_name, proxy.hook_dict[hook_name]):
        yield proxy


def _proxy_class():
    from sae_lens.load_model import HookedProxyLM
    from transformer_lens.hook_points import HookPoint

    class AssayProxyLM(HookedProxyLM):
        def __init__(self, loaded, hook_name: str):
            self._assay_point = resolve_hook(loaded, hook_name)
            super().__init__(loaded.model, loaded.tokenizer, hook_names=[hook_name])

        def setup(self):
            # Replaces HookedProxyLM.setup, which would hook HF modules and never unhook.
            point = HookPoint()
            point.name = self._assay_point.name
            self.hook_dict = {point.name: point}
            self.mod_dict = {point.name: point}
            # HookedProxyLM stops the forward pass after this module once the hook has fired.
            self.named_modules_dict = {point.name: self._assay_point.module}

    return AssayProxyLM


def _record(
    loaded,
    corpus: Corpus,
    batch: TokenBatch,
    runner_cfg: dict,
    seed: int,
    n_tokens: int,
    seconds: tuple[float, float],
    model_info: Mapping[str, Any] | None,
) -> dict:
    import sae_lens
    import torch
    import transformers

    return {
        "trainer": {
            "library": "sae_lens",
            "runner": "LanguageModelSAETrainingRunner",
            "model_wrapper": "HookedProxyLM (Assay hook points)",
            "config": _jsonable(runner_cfg),
        },
        "model": {
            "model_type": loaded.model_type,
            "n_layers": loaded.n_layers,
            "d_model": loaded.d_model,
            **(model_info or {}),
        },
        "corpus": {
            **corpus.describe(),
            "split": "train",
            "seq_len": int(batch.tokens.shape[1]),
            "sequences": int(batch.tokens.shape[0]),
            "token_sha256": batch.digest,
        },
        "seed": seed,
        "n_tokens": n_tokens,
        "seqpos_slice": list(SEQPOS_SLICE),
        "training_seconds": {"wall": round(seconds[0], 1), "cpu": round(seconds[1], 1)},
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sae_lens": sae_lens.__version__,
            "device": loaded.device,
            "dtype": loaded.dtype,
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
    }


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _measure(
    loaded, out: Path, corpus: Corpus, seed: int, settings: TrainingSettings, progress: Progress
) -> dict | None:
    from interp_jobs.engine.analysis.fidelity import measure_fidelity
    from interp_jobs.engine.loading.lenses import load_lens

    if settings.eval_sequences <= 0:
        return None
    progress(0.9, "measuring fidelity on held-out text")
    heldout = pack_documents(
        loaded.tokenizer,
        corpus.split("heldout"),
        seq_len=settings.seq_len,
        seed=seed,
        n_sequences=settings.eval_sequences,
    )
    report = measure_fidelity(loaded, load_lens(out, device=loaded.device), heldout.tokens)
    return {
        "split": "heldout",
        "seed": seed,
        "sequences": settings.eval_sequences,
        "seq_len": settings.seq_len,
        "token_sha256": heldout.digest,
        "metrics": report.metrics(),
    }


def _parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m interp_jobs.engine.training",
        description="Train a lens with SAELens on a local corpus.",
    )
    parser.add_argument("model", help="a Hugging Face model directory or a GGUF file")
    parser.add_argument("--format", default="gguf", choices=("gguf", "hf_dir"))
    parser.add_argument("--hook", required=True, help="e.g. blocks.14.hook_resid_post")
    parser.add_argument("--d-sae", type=int, required=True)
    parser.add_argument("--architecture", default="topk", choices=sorted(ARCHITECTURES))
    parser.add_argument("--k", type=int, help="active features per token (topk, batchtopk)")
    parser.add_argument("--n-tokens", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=TrainingSettings.lr)
    parser.add_argument("--batch-tokens", type=int, default=TrainingSettings.batch_tokens)
    parser.add_argument("--eval-sequences", type=int, default=TrainingSettings.eval_sequences)
    parser.add_argument("--corpus", default=None, help="a shipped corpus (default: stdlib)")
    # The shipped lens was trained on one thread, and float sums may depend on the thread
    # count; on a shared 2-core box two threads also spent 2.4x the CPU time spin-waiting.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> Path:
    import os

    import torch

    from interp_jobs.engine.loading.corpus import DEFAULT_CORPUS, load_corpus
    from interp_jobs.engine.loading.fingerprint import fingerprint_model
    from interp_jobs.engine.loading.models import load_model

    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.format)
    fingerprint = fingerprint_model(Path(args.model), args.format)
    options = {"k": args.k} if args.k else {}
    settings = TrainingSettings(
        lr=args.lr,
        batch_tokens=args.batch_tokens,
        eval_sequences=args.eval_sequences,
        sae_options=options,
    )
    out = train_lens(
        loaded,
        hook_name=args.hook,
        d_sae=args.d_sae,
        architecture=args.architecture,
        corpus=load_corpus(args.corpus or DEFAULT_CORPUS),
        n_tokens=args.n_tokens,
        seed=args.seed,
        out_dir=args.out,
        settings=settings,
        model_info={
            "file": Path(args.model).name,
            "format": args.format,
            "weights_sha256": fingerprint.weights_digest,
        },
        progress=_printer(),
    )
    print(out)
    return out


def _printer() -> Progress:
    last: list[tuple[int, str]] = []

    def report(fraction: float, stage: str) -> None:
        point = (int(fraction * 100), stage)
        if not last or point != last[-1]:
            last.append(point)
            print(f"{point[0]:3d}% {stage}", flush=True)

    return report


if __name__ == "__main__":
    main()
