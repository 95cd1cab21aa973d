"""Train per-layer transcoders for every layer of a model with EleutherAI's sparsify, on CPU.

Steps (each recorded in ``training.json``):

1. **Text.** The training mix is the shipped ``stdlib-docs-v1`` corpus (Python documentation,
   plain and chat-formatted) and the safety-tuning demo set (``demo_data/safety_tuning/v1``:
   harmful requests over the four risk axes with refusals, and harmless requests that share
   their vocabulary, as one-turn chats), rendered with the model's chat template. Never the
   probe sets. Both are split by the corpus module's salted hash of each document id, so the
   held-out text the record measures on was never trained on. The safety set is small, so its
   training documents are repeated ``safety_repeats`` times (recorded). Rows are packed by
   ``corpus.pack_documents``: ``seq_len`` tokens, each starting with the BOS token.
2. **Fit.** ``sparsify.Trainer`` (loss ``fvu``, TopK, ``transcode=True``) on ``layers.N.mlp``
   of every layer at once (its input is circuit-tracer's ``mlp.hook_in``, its output
   ``hook_mlp_out``; Gemma 3's post-MLP norm is folded into the module while it trains, see
   ``_MlpThenNorm``). sparsify's CLI needs CUDA and hub datasets, so its Python API is used.
   Position 0 (the attention sink, see ``analysis.positions``) is left out of the loss:
   sparsify can only exclude token *ids*, so row starts carry a sentinel id that no text has,
   turned back into BOS by a pre-hook on the embedding while training runs.
3. **Convert to JumpReLU.** TopK is not a per-feature function, and neither SAELens's
   transcoders nor circuit-tracer's file loader has it; JumpReLU both have. Each layer gets
   thresholds set on a calibration sample of training rows, by one of two rules
   (``--threshold-rule``): ``layer``, the global threshold that keeps exactly ``k``
   activations per token on average (the inference rule of BatchTopK SAEs, Bussmann et al.
   2024); ``feature``, one threshold per feature, at which it fires on as many calibration
   tokens as TopK kept it (for features whose activations differ in scale, one number per
   layer keeps too many of some and too few of others). The record gives the fidelity of the
   TopK original and of the shipped JumpReLU. ``--stage recalibrate`` re-derives a saved set's
   thresholds by another rule from its own weights and training rows.
4. **Save** in SAELens's format (``loading.transcoders``), float16, one lens per layer, with
   each feature's top activating contexts on training rows, and a manifest of sha256 digests.
5. **Measure** on held-out rows (``analysis.transcoder_fidelity``): per-layer explained
   variance, L0 and dead fraction; next-token loss with every MLP replaced.

    python -m interp_jobs.engine.transcoder_training MODEL.gguf --width 1024 --k 32 \\
        --n-tokens 409600 --seed 0 --out interp_jobs/lenses/DIR
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.loading.corpus import Corpus, Document, corpus_from_documents, load_corpus
from interp_jobs.engine.loading.transcoders import (
    CONTEXTS_FILE,
    HOOK_IN,
    HOOK_OUT,
    LAYER_DIR,
    write_manifest,
)

SAFETY_SET = Path(__file__).resolve().parents[2] / "demo_data" / "safety_tuning" / "v1"
TRAINING_FILE = "training.json"
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class TranscoderSettings:
    width: int = 1024
    k: int = 32
    seq_len: int = 256
    batch_sequences: int = 4
    safety_repeats: int = 2
    auxk_alpha: float = 1 / 32  # revives features silent for dead_after_tokens (OpenAI's TopK)
    dead_after_tokens: int = 50_000
    calibration_sequences: int = 32  # rows that set the JumpReLU thresholds
    context_sequences: int = 256  # rows searched for each feature's top contexts
    context_top: int = 8
    eval_sequences: int = 64  # held-out rows measured for the record
    dtype: str = "float16"  # as saved (loaded back as float32)
    epochs: int = 1  # passes over the training documents, each in its own seeded order
    max_fit_hours: float | None = None  # stop training after this long (see fit())
    threshold_rule: str = "layer"  # TopK -> JumpReLU: see THRESHOLD_RULES


THRESHOLD_RULES = {
    "layer": "per layer, the (k x tokens)-th largest relu pre-activation on calibration "
    "rows (BatchTopK's inference threshold, Bussmann et al. 2024)",
    "feature": "per feature, half-way between its n-th and (n+1)-th largest relu "
    "pre-activation on calibration rows, where n is how many of those tokens TopK kept it on "
    "(zeros padding a token's top k not counted), so it fires as often as TopK kept it; a "
    "feature TopK never kept gets its largest calibration pre-activation or the layer rule's "
    "threshold, whichever is larger",
}


def _ignore(fraction: float, stage: str) -> None:
    return None


# --- 1. text -----------------------------------------------------------------------------------


def safety_documents(directory: Path = SAFETY_SET) -> tuple[list[Document], dict[str, Any]]:
    import hashlib

    manifest = json.loads((directory / "MANIFEST.json").read_text(encoding="utf-8"))
    raw = (directory / manifest["file"]).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest["sha256"]:
        raise PermanentEngineError(f"{directory} is corrupt: sha256 {digest} != manifest.")
    docs = []
    for line in raw.decode("utf-8").splitlines():
        row = json.loads(line)
        turns = (("user", row["prompt"]), ("assistant", row["response"]))
        docs.append(Document(id=f"safety-tuning-v1:{row['id']}", messages=turns))
    return docs, {"name": "safety-tuning-v1", "sha256": digest, "documents": len(docs)}


def training_mix() -> tuple[Corpus, dict[str, Any]]:
    """The stdlib corpus and the safety set as one corpus (one digest over both)."""
    stdlib = load_corpus()
    safety, safety_info = safety_documents()
    mix = corpus_from_documents(
        "transcoder-mix-v1",
        [*stdlib.documents, *safety],
        licence=f"{stdlib.licence}; safety-tuning-v1: CC0-1.0",
        source=f"{stdlib.name} + {safety_info['name']}",
    )
    return mix, {"stdlib": stdlib.describe(), "safety": safety_info, "mix": mix.describe()}


def training_documents(mix: Corpus, safety_repeats: int) -> list[Document]:
    train = mix.split("train")
    safety = [d for d in train if d.id.startswith("safety-tuning-v1:")]
    return train + safety * max(0, safety_repeats - 1)


def pack(loaded, documents, *, seq_len: int, seed: int, n_sequences: int | None):
    from interp_jobs.engine.loading.corpus import pack_documents

    return pack_documents(
        loaded.tokenizer, documents, seq_len=seq_len, seed=seed, n_sequences=n_sequences
    )


# --- 2. fit ------------------------------------------------------------------------------------


class _Rows:
    """Token rows as the map-style dataset sparsify's DataLoader reads (no ``datasets``)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.rows[index]}


class _TimeUp(Exception):
    """Raised at the start of a training step once the time budget is spent."""


class _MlpThenNorm:
    """Builds the module sparsify trains on where a norm follows the MLP (Gemma 3).

    A transcoder writes what the block adds to the residual: ``blocks.N.hook_mlp_out``, which
    in Gemma 3 is the output of ``post_feedforward_layernorm`` (circuit-tracer's
    ``hook_mlp_out`` there too), not of ``mlp``. sparsify transcodes one module's input to its
    output, so while it trains, ``mlp`` becomes ``Sequential(mlp, norm)`` and the norm's own
    slot an identity: the block computes the same function, and the module sparsify hooks
    reads the MLP input and writes the post-norm output."""

    def __init__(self, loaded):
        from interp_jobs.engine.loading.architectures import FAMILIES, get_path

        self.family = next(f for f in FAMILIES if f.name == loaded.family)
        self.blocks = get_path(loaded.model, self.family.blocks)
        self.saved: list[tuple] = []

    def __enter__(self):
        import torch

        out = self.family.mlp_out
        if out is None:  # the MLP's own output is what the block adds
            return self
        try:
            for block in self.blocks:
                mlp, norm = getattr(block, self.family.mlp), getattr(block, out)
                self.saved.append((block, mlp, norm))
                setattr(block, self.family.mlp, torch.nn.Sequential(mlp, norm))
                setattr(block, out, torch.nn.Identity())
        except BaseException:  # __exit__ would not run: put back the blocks already wrapped
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        for block, mlp, norm in self.saved:
            setattr(block, self.family.mlp, mlp)
            setattr(block, self.family.mlp_out_module, norm)
        self.saved.clear()


def fit(
    loaded,
    tokens,
    settings: TranscoderSettings,
    seed: int,
    work_dir: Path,
    deadline: float | None = None,
) -> dict:
    """Train one TopK transcoder per layer with sparsify. Returns ``coders`` (per layer: W_enc
    [d_sae, d_in], b_enc, W_dec [d_sae, d_out], b_dec, float32 on the CPU; schedule-free's
    averaged weights, the ones sparsify itself saves for inference), sparsify's configuration
    and the number of rows trained on (fewer than given when ``deadline``, a
    ``time.monotonic()`` value, passed first: the steps done are the same as a run on just
    those rows would do, so ``--n-tokens`` reproduces it)."""
    import torch
    from sparsify import SparseCoderConfig, TrainConfig, Trainer

    model = getattr(loaded.model, "base_model", loaded.model)  # no LM head: FVU needs no logits
    embed = model.get_input_embeddings()
    sentinel = int(embed.weight.shape[0])  # no text has this id
    rows = tokens.clone().to(loaded.device)
    rows[:, 0] = sentinel
    config = TrainConfig(
        SparseCoderConfig(num_latents=settings.width, k=settings.k, transcode=True),
        batch_size=settings.batch_sequences,
        loss_fn="fvu",
        hookpoints=[f"layers.{i}.mlp" for i in range(loaded.n_layers)],
        exclude_tokens=[sentinel],
        init_seeds=[seed],
        auxk_alpha=settings.auxk_alpha,
        dead_feature_threshold=settings.dead_after_tokens,
        log_to_wandb=False,
        save_dir=str(work_dir),
        run_name="sparsify",
        save_every=10**9,
    )
    torch.manual_seed(seed)
    bos = loaded.tokenizer.bos_token_id

    def unsentinel(module, args):
        if deadline is not None and time.monotonic() > deadline:
            raise _TimeUp
        return (torch.where(args[0] == sentinel, bos, args[0]),)

    with _MlpThenNorm(loaded):
        trainer = Trainer(config, _Rows(rows), model)
        handle = embed.register_forward_pre_hook(unsentinel)
        try:
            trainer.fit()
        except _TimeUp:
            pass
        finally:
            handle.remove()
            loaded.model.requires_grad_(False)
    for optimizer in trainer.optimizers:  # schedule-free: switch to the averaged weights
        if hasattr(optimizer, "eval"):
            optimizer.eval()
    coders = {
        int(name.split(".")[1]): {
            "W_enc": coder.encoder.weight.detach().float().cpu(),
            "b_enc": coder.encoder.bias.detach().float().cpu(),
            "W_dec": coder.W_dec.detach().float().cpu(),
            "b_dec": coder.b_dec.detach().float().cpu(),
        }
        for name, coder in trainer.saes.items()
    }
    return {
        "coders": coders,
        "config": json.loads(json.dumps(asdict(config), default=str)),
        "rows_trained": min(len(rows), trainer.global_step * settings.batch_sequences),
        "steps": trainer.global_step,
    }


def as_saved(coders: dict, dtype: str) -> dict:
    """The coders rounded to the dtype they are saved in (and back to float32), so thresholds
    and every measurement are of the weights that ship."""
    import torch

    torch_dtype = getattr(torch, dtype)
    return {
        layer: {k: v.to(torch_dtype).float() for k, v in tensors.items()}
        for layer, tensors in coders.items()
    }


# --- 3. TopK -> JumpReLU -----------------------------------------------------------------------


def topk_lenses(loaded, coders: dict, k: int) -> list:
    """The trained TopK transcoders as modules with SAELens's encode/decode interface."""
    return [_TopKLens(coders[i], k) for i in range(loaded.n_layers)]


class _TopKLens:
    def __init__(self, tensors: dict, k: int):
        import torch

        self.t, self.k, self.dtype = tensors, k, torch.float32
        self.cfg = type("Cfg", (), {"d_sae": tensors["W_enc"].shape[0]})

    def encode(self, x):
        import torch

        t = self.t
        pre = torch.relu(x @ t["W_enc"].to(x.device).T + t["b_enc"].to(x.device))
        values, index = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, index, values)

    def decode(self, feats):
        return feats @ self.t["W_dec"].to(feats.device) + self.t["b_dec"].to(feats.device)


def calibrate_thresholds(loaded, coders: dict, tokens, k: int, rule: str = "layer") -> list:
    """Per layer, the JumpReLU threshold by ``rule`` (THRESHOLD_RULES): a float for
    ``layer``, a tensor of one threshold per feature for ``feature``."""
    if rule not in THRESHOLD_RULES:
        raise PermanentEngineError(
            f"Unknown threshold rule {rule!r}; use one of: {', '.join(THRESHOLD_RULES)}."
        )
    pre = _calibration_pre_activations(loaded, coders, tokens)
    thresholds: list = []
    for i in range(loaded.n_layers):
        layer = _layer_threshold(pre[i], k)
        thresholds.append(layer if rule == "layer" else _feature_thresholds(pre[i], k, layer))
    return thresholds


def _layer_threshold(pre, k: int) -> float:
    """The pre-activation above which k features per token fire on average."""
    values = pre.flatten()
    n_keep = k * pre.shape[0]
    return float(values.topk(min(n_keep + 1, values.numel())).values[-1])


def _feature_thresholds(pre, k: int, layer_threshold: float):
    """Each feature's threshold at which it fires on as many rows of ``pre`` (tokens x
    features, relu'd) as TopK keeps it on: half-way between its n-th and (n+1)-th largest
    value, so rounding to the saved dtype does not move it onto either. A token with fewer
    than k positive values pads its top k with zeros; those picks are not kept."""
    import torch

    top = pre.topk(k, dim=-1)
    picks = top.indices[top.values > 0]
    kept_on = torch.zeros(pre.shape[1]).scatter_add_(0, picks, torch.ones(picks.numel()))
    ordered = torch.cat([pre.sort(dim=0, descending=True).values, torch.zeros(1, pre.shape[1])])
    n = kept_on.long()
    above = ordered.gather(0, (n - 1).clamp(min=0)[None]).squeeze(0)
    below = ordered.gather(0, n[None]).squeeze(0)
    thresholds = (above + below) / 2
    never = n == 0
    thresholds[never] = ordered[0][never].clamp(min=layer_threshold)
    return thresholds


def _calibration_pre_activations(loaded, coders: dict, tokens) -> dict:
    """Per layer, every calibration token's relu pre-activations (tokens x features),
    position 0 left out as in training."""
    import torch

    from interp_jobs.engine.hooks import capture_activations

    hooks = [HOOK_IN.format(i) for i in range(loaded.n_layers)]
    pre: dict[int, list] = {i: [] for i in range(loaded.n_layers)}
    with torch.inference_mode():
        for start in range(0, len(tokens), 8):
            ids = tokens[start : start + 8].to(loaded.device)
            with capture_activations(loaded, hooks, stop_after_deepest=False) as store:
                loaded.model(input_ids=ids, use_cache=False)
            for i, hook in enumerate(hooks):
                x = store[hook][:, 1:].reshape(-1, loaded.d_model).float().cpu()
                t = coders[i]
                pre[i].append(torch.relu(x @ t["W_enc"].T + t["b_enc"]))
    return {i: torch.cat(chunks) for i, chunks in pre.items()}


# --- 4. save -----------------------------------------------------------------------------------


def save_layer(tensors: dict, threshold, layer: int, out: Path, dtype: str, model: str):
    """One layer in SAELens's format; ``threshold`` is one float or one per feature."""
    import torch
    from sae_lens.saes.transcoder import JumpReLUTranscoder, JumpReLUTranscoderConfig

    d_sae, d_in = tensors["W_enc"].shape
    cfg = JumpReLUTranscoderConfig(
        d_in=d_in,
        d_sae=d_sae,
        d_out=int(tensors["b_dec"].shape[0]),
        dtype=dtype,
        device="cpu",
        apply_b_dec_to_input=False,
    )
    cfg.metadata.hook_name = HOOK_IN.format(layer)
    cfg.metadata.hook_name_out = HOOK_OUT.format(layer)
    cfg.metadata.model_name = model
    cfg.metadata.prepend_bos = True
    cfg.metadata.seqpos_slice = (1, None)  # trained without the attention sink
    lens = JumpReLUTranscoder(cfg)
    torch_dtype = getattr(torch, dtype)
    with torch.no_grad():
        lens.W_enc.data = tensors["W_enc"].T.contiguous().to(torch_dtype)
        lens.b_enc.data = tensors["b_enc"].to(torch_dtype)
        lens.W_dec.data = tensors["W_dec"].contiguous().to(torch_dtype)
        lens.b_dec.data = tensors["b_dec"].to(torch_dtype)
        if isinstance(threshold, float):
            lens.threshold.data = torch.full_like(lens.b_enc.data, threshold)
        else:
            lens.threshold.data = threshold.to(torch_dtype).contiguous()
    lens.save_model(out / LAYER_DIR.format(layer))


def save_contexts(contexts, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    for layer in range(len(contexts.activation)):
        save_file(
            {
                "activation": contexts.activation[layer].to(torch.float16).contiguous(),
                "row": contexts.row[layer].to(torch.int32).contiguous(),
                "position": contexts.position[layer].to(torch.int16).contiguous(),
                "fired": contexts.fired[layer].to(torch.int32).contiguous(),
            },
            str(out / LAYER_DIR.format(layer) / CONTEXTS_FILE),
            metadata={"n_tokens": str(contexts.n_tokens)},
        )


# --- stages: the fit can run on another machine (a GPU) ----------------------------------------

CODERS_FILE = "coders-{:02d}-{:02d}.safetensors"
FIT_FILE = "fit.json"
ROWS_FILE = "rows.npy"
ROWS_RECORD = "rows.json"


def pack_epochs(loaded, settings: TranscoderSettings, seed: int, n_tokens: int | None):
    """The training rows: ``epochs`` passes over the training documents, each pass in its own
    seeded order (seed, seed + 1, ...), cut to ``n_tokens`` when given."""
    import torch

    mix, sources = training_mix()
    docs = training_documents(mix, settings.safety_repeats)
    passes, digests = [], []
    for epoch in range(settings.epochs):
        batch = pack(loaded, docs, seq_len=settings.seq_len, seed=seed + epoch, n_sequences=None)
        passes.append(batch.tokens)
        digests.append(batch.digest)
    rows = torch.cat(passes)
    if n_tokens is not None:
        rows = rows[: max(1, n_tokens // settings.seq_len)]
    record = {
        **sources,
        "split": "train",
        "safety_repeats": settings.safety_repeats,
        "seq_len": settings.seq_len,
        "epochs": settings.epochs,
        "epoch_seeds": [seed + e for e in range(settings.epochs)],
        "epoch_token_sha256": digests,
        "sequences": int(rows.shape[0]),
        "tokens": int(rows.numel()),
        "tokens_trained": int(rows.numel()) - int(rows.shape[0]),  # position 0 left out
        "token_sha256": _digest(rows),
    }
    return rows, record


def save_fit(out: Path, coders: dict, thresholds: list[float], record: dict, dtype: str) -> None:
    """The fitted coders (in the saved dtype) in files of at most 5 layers, and fit.json."""
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    layers = sorted(coders)
    for first in range(0, len(layers), 5):
        chunk = layers[first : first + 5]
        tensors = {
            f"{layer}.{key}": value.to(getattr(torch, dtype)).contiguous()
            for layer in chunk
            for key, value in coders[layer].items()
        }
        save_file(tensors, str(out / CODERS_FILE.format(chunk[0], chunk[-1])))
    body = {**record, "thresholds": [_rounded(t, 8) for t in thresholds]}
    (out / FIT_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def load_fit(directory: Path) -> tuple[dict, list, dict]:
    import torch
    from safetensors.torch import load_file

    coders: dict[int, dict] = {}
    for path in sorted(directory.glob("coders-*.safetensors")):
        for name, tensor in load_file(str(path)).items():
            layer, key = name.split(".", 1)
            coders.setdefault(int(layer), {})[key] = tensor.float()
    record = json.loads((directory / FIT_FILE).read_text(encoding="utf-8"))
    thresholds = [t if isinstance(t, float) else torch.tensor(t) for t in record.pop("thresholds")]
    return coders, thresholds, record


def _rounded(threshold, digits: int):
    if isinstance(threshold, float):
        return round(threshold, digits)
    return [round(float(t), digits) for t in threshold]


def run_fit(loaded, rows, settings: TranscoderSettings, seed: int, work: Path) -> tuple:
    started = (time.perf_counter(), time.process_time())
    deadline = None
    if settings.max_fit_hours is not None:
        deadline = time.monotonic() + 3600 * settings.max_fit_hours
    fitted = fit(loaded, rows, settings, seed, work, deadline)
    seconds = (time.perf_counter() - started[0], time.process_time() - started[1])
    if fitted["rows_trained"] == 0:
        raise PermanentEngineError("No training step finished within --max-fit-hours.")
    trained = rows[: fitted["rows_trained"]]
    coders = as_saved(fitted["coders"], settings.dtype)
    calibration = trained[: settings.calibration_sequences]
    thresholds = calibrate_thresholds(
        loaded, coders, calibration, settings.k, settings.threshold_rule
    )
    record = {
        "trainer": {
            "library": "eai-sparsify",
            "version": _version("eai-sparsify"),
            "config": fitted["config"],
            "steps": fitted["steps"],
            "stopped_by_time_budget": fitted["rows_trained"] < len(rows),
        },
        "rows_trained": fitted["rows_trained"],
        "rows_token_sha256": _digest(trained),
        "training_seconds": {"wall": round(seconds[0], 1), "cpu": round(seconds[1], 1)},
        "environment": _environment(loaded),
    }
    return coders, thresholds, record


# --- the whole run -----------------------------------------------------------------------------


def train_transcoders(
    loaded,
    *,
    n_tokens: int | None,
    seed: int,
    out_dir: str | Path,
    work_dir: str | Path,
    settings: TranscoderSettings | None = None,
    model_info: dict[str, Any] | None = None,
    command: str = "",
    fitted_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Path:
    """Pack, fit (or read a fit made elsewhere from ``fitted_dir``), convert, save, measure."""
    import torch

    settings = settings or TranscoderSettings()
    progress = progress or _ignore
    out, work = Path(out_dir), Path(work_dir)
    if (out / "transcoders.json").exists():
        raise PermanentEngineError(f"{out} already holds a transcoder set; choose a new --out.")
    torch.manual_seed(seed)
    rows, text = pack_epochs(loaded, settings, seed, n_tokens)
    if fitted_dir is None:
        progress(0.0, f"training on up to {rows.numel()} tokens")
        coders, thresholds, fit_record = run_fit(loaded, rows, settings, seed, work)
        if fit_record["rows_trained"] < len(rows):  # the time budget ended it: record those
            n_tokens = fit_record["rows_trained"] * settings.seq_len
            rows, text = pack_epochs(loaded, settings, seed, n_tokens)
        fit_record["reproduce"] = _reproduce(command, n_tokens)
    else:
        coders, thresholds, fit_record = load_fit(Path(fitted_dir))
        fit_rule = fit_record.pop("threshold_rule", "layer")
        if fit_rule != settings.threshold_rule:
            raise PermanentEngineError(
                f"The fit in {fitted_dir} set its thresholds by the {fit_rule!r} rule; finish "
                f"it with --threshold-rule {fit_rule}."
            )
        if fit_record["rows_token_sha256"] != text["token_sha256"]:
            raise PermanentEngineError(
                f"The fit in {fitted_dir} was made on other token rows than these settings "
                "pack; use the same --n-tokens, --epochs, --seed and --safety-repeats."
            )
    finish(
        loaded,
        out,
        coders,
        thresholds,
        {**fit_record, "text": text},
        settings,
        seed,
        model_info or {},
        command,
        progress,
    )
    return out


def _reproduce(command: str, n_tokens: int | None) -> str:
    """The command that trains on exactly the rows this run trained on, without a time budget."""
    import shlex

    words = shlex.split(command)
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in ("--n-tokens", "--max-fit-hours"):
            skip = True
            continue
        out.append(word)
    if n_tokens is not None:
        out += ["--n-tokens", str(n_tokens)]
    return shlex.join(out)


def finish(
    loaded, out: Path, coders, thresholds, record, settings, seed, model_info, command, progress
) -> None:
    """Save the set, its contexts, manifest and record; measure it on held-out rows."""
    from interp_jobs.engine.analysis.transcoder_fidelity import measure_transcoders, top_contexts
    from interp_jobs.engine.loading.transcoders import load_set_lenses, read_set

    model_name = model_info.get("name", loaded.model_type)
    for layer in range(loaded.n_layers):
        save_layer(coders[layer], thresholds[layer], layer, out, settings.dtype, model_name)
    saved = load_set_lenses_unverified(out, loaded.n_layers, loaded.device)
    mix, _ = training_mix()
    docs = training_documents(mix, settings.safety_repeats)
    first = pack(
        loaded, docs, seq_len=settings.seq_len, seed=seed, n_sequences=settings.context_sequences
    )
    progress(0.8, "top contexts")
    contexts = top_contexts(loaded, saved, first.tokens, n_top=settings.context_top)
    save_contexts(contexts, out)
    heldout = heldout_rows(loaded, settings, seed)
    progress(0.9, "measuring on held-out text")
    shipped = measure_transcoders(loaded, saved, heldout.tokens)
    original = measure_transcoders(
        loaded, topk_lenses(loaded, coders, settings.k), heldout.tokens, compute_ce=False
    )
    write_manifest(out, _manifest(loaded, settings, model_name, first, contexts))
    read_set(out)  # the digests just written verify
    body = {
        **record,
        "command": command,
        "seed": seed,
        "settings": asdict(settings),
        "model": {"n_layers": loaded.n_layers, "d_model": loaded.d_model, **model_info},
        "jumprelu": _rule_record(settings, thresholds),
        "heldout": {
            "sequences": settings.eval_sequences,
            "token_sha256": heldout.digest,
            "shipped_jumprelu": {"summary": shipped.summary(), "layers": shipped.layers},
            "topk_before_conversion": {"summary": original.summary(), "layers": original.layers},
            "positions": shipped.positions,
            "measured_by": _environment(loaded),
        },
        "dead_on_context_rows": [
            round(float((fired == 0).double().mean()), 6) for fired in contexts.fired
        ],
    }
    (out / TRAINING_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    load_set_lenses(read_set(out), device=loaded.device)
    progress(1.0, "saved")


def _rule_record(settings: TranscoderSettings, thresholds: list) -> dict:
    """How the thresholds were set; per-feature thresholds are in the layer files, so the
    record keeps each layer's quartiles of them."""
    import torch

    body: dict[str, Any] = {
        "rule": THRESHOLD_RULES[settings.threshold_rule],
        "calibration_sequences": settings.calibration_sequences,
    }
    if settings.threshold_rule == "layer":
        return {**body, "thresholds": [round(t, 6) for t in thresholds]}
    quartiles = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        **body,
        "threshold_quartiles": [
            [round(float(q), 6) for q in t.float().quantile(quartiles)] for t in thresholds
        ],
    }


def loss_line(record: dict) -> str:
    """The README's next-token-loss sentence, from the record (tested like ``layer_table``)."""
    summary = record["heldout"]["shipped_jumprelu"]["summary"]
    keys = ("ce_clean", "ce_spliced", "ce_zero", "fraction_loss_recovered", "kl_spliced")
    figures = json.dumps({k: summary[k] for k in keys})
    return f"Next-token loss with every MLP replaced by its transcoder (held-out rows): {figures}."


def quality_phrase(record: dict) -> str:
    """The README's held-out quality phrase, from the record (tested like ``layer_table``)."""
    summary = record["heldout"]["shipped_jumprelu"]["summary"]
    return (
        f"explain {summary['explained_variance_mean']:.2f} of the MLP outputs' variance on "
        f"average (worst layer {summary['explained_variance_min']:.2f}), with "
        f"{summary['l0_mean']:.1f} active features per token and "
        f"{summary['dead_fraction_mean']:.1%} of features dead on the held-out rows"
    )


def heldout_rows(loaded, settings: TranscoderSettings, seed: int):
    """The held-out rows a set is measured on (never trained on: the corpus's split)."""
    mix, _ = training_mix()
    return pack(
        loaded,
        mix.split("heldout"),
        seq_len=settings.seq_len,
        seed=seed,
        n_sequences=settings.eval_sequences,
    )


def remeasure(loaded, out: Path, command: str, weights_sha256: str, why: str) -> dict:
    """Measure a saved set's shipped JumpReLU layers on its held-out rows again and replace
    that part of its record (the weights, digests and the rest of the record stay). For a
    record measured by an older, wrong measurement: it keeps the old figures and ``why``."""
    from interp_jobs.engine.analysis.transcoder_fidelity import measure_transcoders
    from interp_jobs.engine.loading.transcoders import load_set_lenses, read_set

    path = out / TRAINING_FILE
    record = _record_of_model(path, weights_sha256, "remeasure")
    heldout = heldout_rows(loaded, TranscoderSettings(**record["settings"]), record["seed"])
    if heldout.digest != record["heldout"]["token_sha256"]:
        raise PermanentEngineError(
            f"The held-out rows rebuilt here differ from those {path} was measured on "
            "(another tokenizer or corpus); remeasuring would compare other text."
        )
    # two rows at a time: the numbers are per row, and this may run beside a demo's worker
    lenses = load_set_lenses(read_set(out))
    shipped = measure_transcoders(loaded, lenses, heldout.tokens, batch_size=2)
    before = record["heldout"]["shipped_jumprelu"]["summary"]
    record["heldout"]["shipped_jumprelu"] = {"summary": shipped.summary(), "layers": shipped.layers}
    record["heldout"]["remeasured"] = {  # measured_by stays: the TopK figures are still its
        "command": command,
        "measured_by": _environment(loaded),
        "remeasured": ["shipped_jumprelu"],
        "why": why,
        "summary_before": before,
    }
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def _record_of_model(path: Path, weights_sha256: str, verb: str) -> dict:
    """A set's record, if it was trained on these weights."""
    record = json.loads(path.read_text(encoding="utf-8"))
    if weights_sha256 != record["model"].get("weights_sha256"):
        raise PermanentEngineError(
            f"{path} was trained on weights {record['model'].get('weights_sha256')}, not on "
            f"these ({weights_sha256}); {verb} it on the model it was trained on."
        )
    return record


# what finish() writes into a record; everything else is the fit's and stays
_FINISHED = ("command", "seed", "settings", "model", "jumprelu", "heldout", "dead_on_context_rows")


def recalibrate(
    loaded,
    out: Path,
    command: str,
    weights_sha256: str,
    why: str,
    rule: str,
    progress: Progress | None = None,
) -> dict:
    """Set a saved set's JumpReLU thresholds again by ``rule`` from its own weights (the TopK
    coders as saved) and the calibration rows it was set on, then save, measure and record it
    as ``finish`` does. The record keeps the fit's part, the rule and figures before, and why."""
    path = out / TRAINING_FILE
    record = _record_of_model(path, weights_sha256, "recalibrate")
    settings = replace(TranscoderSettings(**record["settings"]), threshold_rule=rule)
    rows, _ = pack_epochs(loaded, settings, record["seed"], None)
    trained = rows[: record["rows_trained"]]
    if _digest(trained) != record["rows_token_sha256"]:
        raise PermanentEngineError(
            f"The training rows rebuilt here differ from those {path} was fit on (another "
            "tokenizer or corpus); thresholds set on them would describe other text."
        )
    coders = _saved_coders(out, loaded.n_layers)
    calibration = trained[: settings.calibration_sequences]
    thresholds = calibrate_thresholds(loaded, coders, calibration, settings.k, rule)
    fit_part = {k: v for k, v in record.items() if k not in _FINISHED and k != "recalibrated"}
    reproduce = _without_option(fit_part.get("reproduce", record["command"]), "--threshold-rule")
    fit_part["reproduce"] = f"{reproduce} --threshold-rule {rule}"
    fit_part["recalibrated"] = {
        "command": command,
        "why": why,
        "measured_by": _environment(loaded),
        "before": {
            "jumprelu": record["jumprelu"],
            "shipped_jumprelu_summary": record["heldout"]["shipped_jumprelu"]["summary"],
            "shipped_jumprelu_layers": record["heldout"]["shipped_jumprelu"]["layers"],
            "remeasured": record["heldout"].get("remeasured"),
            "recalibrated": record.get("recalibrated"),  # an earlier recalibration's record
        },
    }
    model_info = {k: v for k, v in record["model"].items() if k not in ("n_layers", "d_model")}
    finish(
        loaded,
        out,
        coders,
        thresholds,
        fit_part,
        settings,
        record["seed"],
        model_info,
        record["command"],
        progress or _ignore,
    )
    return json.loads(path.read_text(encoding="utf-8"))


def _without_option(command: str, option: str) -> str:
    import shlex

    words = shlex.split(command)
    keep = [w for i, w in enumerate(words) if w != option and (i == 0 or words[i - 1] != option)]
    return shlex.join(keep)


def _saved_coders(out: Path, n_layers: int) -> dict:
    """A saved set's weights in the fit's layout (W_enc features x d_in), as float32."""
    lenses = load_set_lenses_unverified(out, n_layers)
    return {
        i: {
            "W_enc": lens.W_enc.data.T.float().contiguous(),
            "b_enc": lens.b_enc.data.float(),
            "W_dec": lens.W_dec.data.float(),
            "b_dec": lens.b_dec.data.float(),
        }
        for i, lens in enumerate(lenses)
    }


def _manifest(loaded, settings, model_name: str, first, contexts) -> dict:
    return {
        "n_layers": loaded.n_layers,
        "d_model": loaded.d_model,
        "d_transcoder": settings.width,
        "architecture": "jumprelu_transcoder",
        "hook_in": HOOK_IN.format("{i}"),
        "hook_out": HOOK_OUT.format("{i}"),
        "scan": f"assay-{model_name}-mlp-transcoders-{settings.width}".lower(),
        "dtype": settings.dtype,
        "contexts": {
            "file": f"layer_NN/{CONTEXTS_FILE}",
            "rows": "the first n_rows rows of the first training pass (see training.json)",
            "n_rows": int(first.tokens.shape[0]),
            "seq_len": settings.seq_len,
            "token_sha256": first.digest,
            "n_tokens": contexts.n_tokens,
        },
    }


def layer_table(record: dict) -> str:
    """The per-layer fidelity table of a set's README, from its ``training.json`` (tested
    against every shipped README, so the table is never copied by hand)."""
    held = record["heldout"]
    shipped, original = held["shipped_jumprelu"]["layers"], held["topk_before_conversion"]["layers"]
    rows = [
        f"| {s['layer']} | {s['explained_variance']:.3f} | {o['explained_variance']:.3f} | "
        f"{s['l0']:.1f} | {s['dead_fraction']:.3f} | {dead:.3f} |"
        for s, o, dead in zip(shipped, original, record["dead_on_context_rows"], strict=True)
    ]
    return "\n".join(
        [
            "| layer | EV (shipped JumpReLU) | EV (TopK original) | L0 | dead (held-out) "
            "| dead (context rows) |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def load_set_lenses_unverified(out: Path, n_layers: int, device: str = "cpu") -> list:
    from interp_jobs.engine.loading.lenses import load_lens

    return [load_lens(out / LAYER_DIR.format(i), device=device) for i in range(n_layers)]


def _digest(tokens) -> str:
    from interp_jobs.engine.loading.corpus import token_digest

    return token_digest(tokens)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _environment(loaded) -> dict[str, Any]:
    import torch

    device = loaded.device
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "sae_lens": _version("sae-lens"),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": loaded.dtype,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


STAGES = ("all", "pack", "fit", "finish", "remeasure", "recalibrate")


def _parser():
    import argparse

    defaults = TranscoderSettings()
    parser = argparse.ArgumentParser(
        prog="python -m interp_jobs.engine.transcoder_training",
        description="Train per-layer transcoders for every layer with sparsify. Stage 'all' "
        "does everything here; 'fit' only trains and writes the coders to --fitted (e.g. on a "
        "GPU machine); 'finish' converts, saves and measures a fit read from --fitted; "
        "'remeasure' measures the saved set in --out on its held-out rows again; "
        "'recalibrate' sets its JumpReLU thresholds again by --threshold-rule.",
    )
    parser.add_argument("model", help="a Hugging Face model directory or a GGUF file")
    parser.add_argument("--stage", default="all", choices=STAGES)
    parser.add_argument("--format", default="gguf", choices=("gguf", "hf_dir"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--n-tokens", type=int, default=None, help="default: every row")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-sequences", type=int, default=defaults.batch_sequences)
    parser.add_argument("--safety-repeats", type=int, default=defaults.safety_repeats)
    parser.add_argument("--eval-sequences", type=int, default=defaults.eval_sequences)
    parser.add_argument("--context-sequences", type=int, default=defaults.context_sequences)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--max-fit-hours",
        type=float,
        default=None,
        help="stop training after this long; the record then gives --n-tokens for the rows "
        "trained on, which reproduces the run without the budget",
    )
    parser.add_argument(
        "--work-dir", required=True, help="sparsify's checkpoints (not shipped; can be deleted)"
    )
    parser.add_argument("--fitted", default=None, help="where 'fit' writes / 'finish' reads")
    parser.add_argument(
        "--rows",
        default=None,
        help="stage fit: token rows packed elsewhere (.npy, from --stage pack), so a machine "
        "with another tokenizer version trains on the same tokens",
    )
    parser.add_argument(
        "--out", default=None, help="the transcoder set (stages all, finish, remeasure)"
    )
    parser.add_argument(
        "--threshold-rule", default=defaults.threshold_rule, choices=tuple(THRESHOLD_RULES)
    )
    parser.add_argument(
        "--why", default=None, help="stages remeasure, recalibrate: why the record is redone"
    )
    return parser


def main(argv: list[str] | None = None) -> Path:
    import os
    import shlex
    import sys

    import numpy as np
    import torch

    from interp_jobs.engine.loading.fingerprint import fingerprint_model
    from interp_jobs.engine.loading.models import load_model

    parser = _parser()
    args = parser.parse_args(argv)
    if args.stage in ("remeasure", "recalibrate") and not (args.out and args.why):
        parser.error(f"--stage {args.stage} needs --out (the set) and --why (kept in its record)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, args.format, device=args.device)
    settings = TranscoderSettings(
        width=args.width,
        k=args.k,
        epochs=args.epochs,
        batch_sequences=args.batch_sequences,
        safety_repeats=args.safety_repeats,
        eval_sequences=args.eval_sequences,
        context_sequences=args.context_sequences,
        max_fit_hours=args.max_fit_hours,
        threshold_rule=args.threshold_rule,
    )
    if args.stage == "pack":
        rows, _ = pack_epochs(loaded, settings, args.seed, args.n_tokens)
        # uint16 holds any id of a vocabulary under 65,536 (SmolLM2: 49,152) in half the bytes
        small = int(rows.max()) < 65536
        np.save(args.rows, rows.numpy().astype("uint16" if small else "int32"))
        print(args.rows, tuple(rows.shape), _digest(rows))
        return Path(args.rows)
    argv_text = argv if argv is not None else sys.argv[1:]
    command = "python -m interp_jobs.engine.transcoder_training " + shlex.join(argv_text)
    if args.stage in ("remeasure", "recalibrate"):
        digest = fingerprint_model(Path(args.model), args.format).weights_digest
        if args.stage == "remeasure":
            remeasure(loaded, Path(args.out), command, digest, args.why)
        else:
            recalibrate(
                loaded, Path(args.out), command, digest, args.why, args.threshold_rule, _printer()
            )
        print(args.out)
        return Path(args.out)
    if args.stage == "fit":
        rows = _rows(args, loaded, settings)
        coders, thresholds, record = run_fit(loaded, rows, settings, args.seed, Path(args.work_dir))
        save_fit(
            Path(args.fitted),
            coders,
            thresholds,
            {**record, "fit_command": command, "threshold_rule": settings.threshold_rule},
            settings.dtype,
        )
        print(args.fitted)
        return Path(args.fitted)
    fingerprint = fingerprint_model(Path(args.model), args.format)
    out = train_transcoders(
        loaded,
        n_tokens=args.n_tokens,
        seed=args.seed,
        out_dir=args.out,
        work_dir=args.work_dir,
        settings=settings,
        model_info={
            "name": Path(args.model).name.split(".")[0],
            "file": Path(args.model).name,
            "format": args.format,
            "weights_sha256": fingerprint.weights_digest,
        },
        command=command,
        fitted_dir=args.fitted if args.stage == "finish" else None,
        progress=_printer(),
    )
    print(out)
    return out


def _rows(args, loaded, settings: TranscoderSettings):
    import numpy as np
    import torch

    if args.rows:
        return torch.from_numpy(np.load(args.rows).astype("int64"))
    return pack_epochs(loaded, settings, args.seed, args.n_tokens)[0]


def _printer() -> Progress:
    def report(fraction: float, stage: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {fraction:4.0%} {stage}", flush=True)

    return report


def context_rows(loaded, root: str | Path):
    """The training rows a set's ``contexts.safetensors`` index, rebuilt from the corpus and
    checked against the digest recorded at training; None if the set has no such record or
    the rebuilt rows differ (another tokenizer, a changed corpus)."""
    from interp_jobs.engine.loading.corpus import token_digest
    from interp_jobs.engine.loading.transcoders import SET_FILE

    root = Path(root)
    try:
        manifest = json.loads((root / SET_FILE).read_text(encoding="utf-8"))
        record = json.loads((root / TRAINING_FILE).read_text(encoding="utf-8"))
        spec = manifest["contexts"]
        mix, _ = training_mix()
        docs = training_documents(mix, record["text"]["safety_repeats"])
        rows = pack(
            loaded, docs, seq_len=spec["seq_len"], seed=record["seed"], n_sequences=spec["n_rows"]
        ).tokens
    except (OSError, KeyError, ValueError, PermanentEngineError):
        return None
    return rows if token_digest(rows) == spec["token_sha256"] else None


if __name__ == "__main__":
    main()
