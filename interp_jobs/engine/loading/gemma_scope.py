"""JumpReLU SAEs in Gemma Scope 2's on-disk layout: write one, read one back.

Gemma Scope 2 (the SAEs and transcoders Google DeepMind released for Gemma 3) stores each
lens as a folder named after what it reads, under a folder per site:

    <root>/resid_post/layer_{L}_width_{W}_l0_{size}/params.safetensors
        w_enc [d_in, d_sae], w_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], threshold [d_sae]
    <root>/resid_post/layer_{L}_width_{W}_l0_{size}/config.json
        {"architecture": "jump_relu", "model_name": ...,
         "hf_hook_point_in": "model.layers.L.output"}

and computes ``f = pre * (pre > threshold)`` with ``pre = x @ w_enc + b_enc`` (no ``b_dec``
subtracted from the input) and ``x_hat = f @ w_dec + b_dec``. SAELens reads these folders
with its ``gemma_3`` converter (``sae_lens.loading.pretrained_sae_loaders``), circuit-tracer
with ``load_gemma_scope_2_transcoder`` (an SAE is a transcoder whose output space is its input
space). Both only fetch from the hub, so ``load_with_sae_lens`` runs SAELens's own converter
on a local folder (its two hub calls answered from disk), and ``load_with_circuit_tracer``
calls circuit-tracer's loader on the local file as it is.

A lens trained by SAELens with ``apply_b_dec_to_input=True`` subtracts ``b_dec`` first; the
export folds that into ``b_enc`` (``b_enc - b_dec @ W_enc``), so the same features come out.
SAELens applies ``relu(pre) * (pre > threshold)``, Gemma Scope ``pre * (pre > threshold)``:
equal for non-negative thresholds, which the export requires.

Train the shipped Gemma lens (SAELens's trainer, DeepMind's quadratic L0 loss) and write it
in both SAELens's format and this layout:

    python -m interp_jobs.engine.loading.gemma_scope MODEL.gguf --layer 9 --d-sae 2048 \
        --target-l0 32 --init-threshold 0.2 --n-tokens 600000 --eval-sequences 16 --seed 0 \
        --corpus transcoder-mix-v1 --pre-act-loss 3e-3 --out interp_jobs/lenses/NAME

(the shipped lens's README has the exact command and its record).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError

PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"
SITE = "resid_post"  # the only site written here so far
_FOLDER = re.compile(r"^layer_(\d+)_width_(\w+?)_l0_(\w+)$")
MIX = "transcoder-mix-v1"


def folder_name(layer: int, d_sae: int, l0_label: str) -> str:
    """``resid_post/layer_9_width_1k_l0_small``: Gemma Scope 2's naming (16k, 262k, ...)."""
    width = f"{d_sae // 1024}k" if d_sae % 1024 == 0 else str(d_sae)
    return f"{SITE}/layer_{layer}_width_{width}_l0_{l0_label}"


def gemma_scope_tensors(lens) -> dict[str, Any]:
    """The lens's tensors under Gemma Scope 2's names, with any input ``b_dec`` folded in."""
    w_enc = lens.W_enc.detach().float()
    b_dec = lens.b_dec.detach().float()
    b_enc = lens.b_enc.detach().float()
    if getattr(lens.cfg, "apply_b_dec_to_input", False):
        b_enc = b_enc - b_dec @ w_enc
    threshold = getattr(lens, "threshold", None)
    if threshold is None or lens.cfg.architecture() != "jumprelu":
        raise PermanentEngineError(
            f"Gemma Scope 2's layout holds JumpReLU SAEs; this lens is {lens.cfg.architecture()}."
        )
    if bool((threshold < 0).any()):
        raise PermanentEngineError(
            "A JumpReLU threshold is negative; SAELens (relu then threshold) and Gemma Scope "
            "(threshold only) would then compute different features."
        )
    return {
        "w_enc": w_enc.contiguous(),
        "w_dec": lens.W_dec.detach().float().contiguous(),
        "b_enc": b_enc.contiguous(),
        "b_dec": b_dec.contiguous(),
        "threshold": threshold.detach().float().contiguous(),
    }


def save_gemma_scope_2(lens, root: str | Path, *, model_name: str, l0_label: str = "small") -> Path:
    """Write a JumpReLU lens on ``blocks.L.hook_resid_post`` under ``root``; return its folder."""
    from safetensors.torch import save_file

    from interp_jobs.engine.hooks import parse_hook_name

    layer, site = parse_hook_name(lens.cfg.metadata.hook_name)
    if site != SITE:
        raise PermanentEngineError(
            f"Only residual-stream (resid_post) lenses are written in Gemma Scope 2's layout; "
            f"this one reads {lens.cfg.metadata.hook_name}."
        )
    folder = Path(root) / folder_name(layer, lens.cfg.d_sae, l0_label)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(gemma_scope_tensors(lens), str(folder / PARAMS_FILE))
    config = {
        "architecture": "jump_relu",
        "model_name": model_name,
        "hf_hook_point_in": f"model.layers.{layer}.output",
        "width": lens.cfg.d_sae,
    }
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def _layer_of(folder: Path) -> int:
    match = _FOLDER.match(folder.name)
    if match is None or folder.parent.name != SITE:
        raise PermanentEngineError(
            f"{folder} is not a Gemma Scope 2 resid_post folder "
            "(resid_post/layer_L_width_W_l0_SIZE)."
        )
    return int(match.group(1))


def load_with_sae_lens(folder: str | Path, *, device: str = "cpu"):
    """Load a local Gemma Scope 2 folder through SAELens's own ``gemma_3`` converter."""
    from sae_lens import SAE
    from sae_lens.loading import pretrained_sae_loaders as loaders

    folder = Path(folder)
    _layer_of(folder)
    # The converter takes (repo_id, folder) on the hub; a repo id naming the local root
    # keeps its model-name rule ("gemma-scope-2" -> "gemma-3") and hook inference intact.
    root, rel = folder.parent.parent, f"{folder.parent.name}/{folder.name}"
    with _hub_from_disk(loaders, root):
        cfg_dict, state_dict, _ = loaders.gemma_3_sae_huggingface_loader(
            "local/gemma-scope-2", rel, device=device
        )
    return _from_converted(SAE, cfg_dict, state_dict)


@contextmanager
def _hub_from_disk(loaders, root: Path):
    """Answer the converter's two hub calls (a file, a safetensors header) from ``root``."""
    from safetensors import safe_open

    def download(repo_id, filename, subfolder=None, **kwargs):
        path = root / (subfolder or "") / filename
        if not path.is_file():
            raise PermanentEngineError(f"{path} is missing from the Gemma Scope 2 folder.")
        return str(path)

    def shapes(repo_id, filename):
        with safe_open(str(root / filename), framework="pt") as handle:
            return {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118

    saved = loaders.hf_hub_download, loaders.get_safetensors_tensor_shapes
    loaders.hf_hub_download, loaders.get_safetensors_tensor_shapes = download, shapes
    try:
        yield
    finally:
        loaders.hf_hub_download, loaders.get_safetensors_tensor_shapes = saved


def _from_converted(sae_class, cfg_dict: dict, state_dict: dict):
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    cfg_dict = handle_config_defaulting(cfg_dict)
    config = sae_class.get_sae_config_class_for_architecture(cfg_dict["architecture"])
    sae_cfg = config.from_dict(cfg_dict)
    sae = sae_class.get_sae_class_for_architecture(sae_cfg.architecture())(sae_cfg)
    sae.load_state_dict(state_dict)
    sae.eval()
    sae.requires_grad_(False)
    return sae


def load_with_circuit_tracer(folder: str | Path, *, device: str = "cpu"):
    """circuit-tracer's Gemma Scope 2 loader on the folder's ``params.safetensors``."""
    import torch

    from interp_jobs.engine.loading.transcoders import circuit_tracer

    folder = Path(folder)
    layer = _layer_of(folder)
    circuit_tracer()
    from circuit_tracer.transcoder.single_layer_transcoder import load_gemma_scope_2_transcoder

    return load_gemma_scope_2_transcoder(
        str(folder / PARAMS_FILE), layer, device=torch.device(device)
    )


# --- training the shipped lens -------------------------------------------------------------


def _parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m interp_jobs.engine.loading.gemma_scope",
        description="Train a JumpReLU SAE with SAELens; save it also in Gemma Scope 2's layout.",
    )
    parser.add_argument("model", help="the Gemma 3 GGUF file (demo.gemma_fetch)")
    parser.add_argument("--layer", type=int, default=9)
    parser.add_argument("--d-sae", type=int, default=1024)
    parser.add_argument("--target-l0", type=float, default=32.0)
    # SAELens's default (0.01) leaves half the features on at the start (pre-activations of
    # normalised inputs are ~0.1 wide), more than a short CPU run can prune; 0.2 starts near
    # the target.
    parser.add_argument("--init-threshold", type=float, default=0.2)
    parser.add_argument("--n-tokens", type=int, required=True)
    parser.add_argument("--batch-tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-sequences", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--corpus",
        default="stdlib-docs-v1",
        choices=("stdlib-docs-v1", MIX),
        help=f"{MIX}: the documentation plus the safety-tuning chats (the risk axes' text)",
    )
    # Anthropic's pre-activation loss, on features silent for the dead window only: a JumpReLU
    # feature below its threshold gets no gradient from the L0 or reconstruction loss, so a
    # short run otherwise leaves most of the dictionary dead (the 2026 lens: 70 %).
    parser.add_argument("--pre-act-loss", type=float, default=None)
    parser.add_argument("--out", required=True)
    return parser


def main(argv: list[str] | None = None) -> Path:
    import os

    import torch

    from interp_jobs.engine.loading.fingerprint import fingerprint_model
    from interp_jobs.engine.loading.lenses import load_lens
    from interp_jobs.engine.loading.models import load_model
    from interp_jobs.engine.training import TrainingSettings, _printer, train_lens

    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, "gguf")
    settings = TrainingSettings(
        lr=args.lr,
        batch_tokens=args.batch_tokens,
        eval_sequences=args.eval_sequences,
        sae_options={
            # Gemma Scope 2's own sparsity loss and encoder convention (no b_dec on the input).
            "jumprelu_sparsity_loss_mode": "quadratic",
            "target_l0": args.target_l0,
            "jumprelu_init_threshold": args.init_threshold,
            "apply_b_dec_to_input": False,
            "pre_act_loss_coefficient": args.pre_act_loss,
        },
    )
    out = train_lens(
        loaded,
        hook_name=f"blocks.{args.layer}.hook_resid_post",
        d_sae=args.d_sae,
        architecture="jumprelu",
        corpus=_corpus(args.corpus),
        n_tokens=args.n_tokens,
        seed=args.seed,
        out_dir=args.out,
        settings=settings,
        model_info={
            "file": Path(args.model).name,
            "format": "gguf",
            "weights_sha256": fingerprint_model(Path(args.model), "gguf").weights_digest,
        },
        progress=_printer(),
    )
    folder = save_gemma_scope_2(load_lens(out), out / "gemma-scope-2", model_name="gemma-3-270m")
    print(out, folder)
    return out


def _corpus(name: str):
    """A shipped corpus, or the transcoders' mix (built from two shipped sets, one digest)."""
    from interp_jobs.engine.loading.corpus import load_corpus

    if name == MIX:
        from interp_jobs.engine.transcoder_training import training_mix

        return training_mix()[0]
    return load_corpus(name)


if __name__ == "__main__":
    main()
