"""Per-layer transcoders (MLP in -> MLP out): their on-disk set, and circuit-tracer's view of it.

On disk a transcoder set is a folder with one SAELens lens per layer and a manifest:

    <set>/transcoders.json           the manifest: format, layers, widths, hook points, and the
                                     sha256 of every file below (checked on every load)
    <set>/training.json, README.md   how the set was trained and measured
    <set>/layer_NN/cfg.json          SAELens ``jumprelu_transcoder`` config (hook_name
                                     ``blocks.NN.ln2.hook_normalized``, hook_name_out
                                     ``blocks.NN.hook_mlp_out``)
    <set>/layer_NN/sae_weights.safetensors   W_enc [d_in, d_sae], W_dec [d_sae, d_out], b_enc,
                                     b_dec, threshold (float16 when shipped)
    <set>/layer_NN/contexts.safetensors      top activating contexts of each feature on the
                                     training text (for the viewer's feature files)

Each ``layer_NN`` is an ordinary lens: ``sae_lens.SAE.load_from_disk`` loads it, and Assay
registers it like any other lens (one Lens record per layer, so the worker binds every layer's
bytes to a registered digest before a check reads it). circuit-tracer reads per-layer files of
its own layout (``layer_{i}.safetensors`` with ``W_enc`` [d_sae, d_in] and
``activation_function.threshold``, plus a ``config.yaml`` of ``model_kind: transcoder_set``):
``export_circuit_tracer`` writes that layout from the same tensors (a transpose and a rename,
nothing else) and its own ``load_transcoders`` reads it back (tested); ``to_circuit_tracer``
builds the same ``TranscoderSet`` in memory from the registered lenses, which is what the
circuit_trace check uses, so that what it attributes is exactly the bytes the worker verified.

JumpReLU (``x * (x > threshold)``) is the activation both libraries share, and it is the same
function in both: SAELens applies ``relu(x) * (x > threshold)``, circuit-tracer
``x * (x > threshold)``, equal for the non-negative thresholds this module writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError

SET_FILE = "transcoders.json"
SET_FORMAT = "assay-transcoder-set-v1"
CONTEXTS_FILE = "contexts.safetensors"
LAYER_DIR = "layer_{:02d}"
HOOK_IN = "blocks.{}.ln2.hook_normalized"  # the normalised MLP input (circuit-tracer: mlp.hook_in)
HOOK_OUT = "blocks.{}.hook_mlp_out"  # what the MLP adds to the residual
# circuit-tracer's names for them (see circuit_tracer_hooks for Gemma 3's output).
CIRCUIT_TRACER_HOOKS = {"feature_input_hook": "mlp.hook_in", "feature_output_hook": "mlp.hook_out"}
TRANSCODER_ARCHITECTURES = ("jumprelu_transcoder", "transcoder")
_LAYER = re.compile(r"^blocks\.(\d+)\.ln2\.hook_normalized$")


def circuit_tracer():
    """Import circuit-tracer 0.5.0 under transformers 5 / huggingface_hub >= 1.

    circuit-tracer pins transformers<=4.57.3 and huggingface-hub<1 and imports
    ``huggingface_hub.constants.HF_HUB_ENABLE_HF_TRANSFER``, which hub 1.0 removed; nothing
    else it uses changed (graphs and interventions were bitwise equal to a 4.57.3 run). The
    constant only chooses how hub downloads run, and Assay never downloads: set it to False
    before the import. Keeping one transformers version matters more than the pin: a model
    directory written by 5.x and read by 4.57.3 silently loses its RoPE base (rope_theta).
    """
    import huggingface_hub.constants as hub_constants

    if not hasattr(hub_constants, "HF_HUB_ENABLE_HF_TRANSFER"):
        hub_constants.HF_HUB_ENABLE_HF_TRANSFER = False  # type: ignore[attr-defined]
    import circuit_tracer

    return circuit_tracer


# --- one layer ------------------------------------------------------------------------------


def is_mlp_transcoder(lens) -> bool:
    try:
        transcoder_layer(lens)
    except PermanentEngineError:
        return False
    return True


def transcoder_layer(lens) -> int:
    """The layer a SAELens lens transcodes (MLP input -> MLP output of the same block)."""
    cfg = lens.cfg
    hook_in, hook_out = cfg.metadata.hook_name, cfg.metadata.hook_name_out
    match = _LAYER.match(hook_in or "")
    if cfg.architecture() not in TRANSCODER_ARCHITECTURES or match is None:
        raise PermanentEngineError(
            f"The lens reading {hook_in!r} ({cfg.architecture()}) is not a per-layer MLP "
            "transcoder; circuit tracing needs transcoders reading blocks.N.ln2.hook_normalized "
            "and writing blocks.N.hook_mlp_out."
        )
    layer = int(match.group(1))
    if hook_out != HOOK_OUT.format(layer):
        raise PermanentEngineError(
            f"The transcoder reading {hook_in} writes {hook_out!r}; it must write "
            f"{HOOK_OUT.format(layer)} (the same block's MLP output)."
        )
    return layer


def order_layers(lenses: Sequence, n_layers: int) -> list:
    """The lenses sorted by layer; refuses a set that misses, repeats or mixes layers/widths."""
    by_layer: dict[int, Any] = {}
    for lens in lenses:
        layer = transcoder_layer(lens)
        if layer in by_layer:
            raise PermanentEngineError(f"Two transcoders read layer {layer}; name one per layer.")
        by_layer[layer] = lens
    missing = sorted(set(range(n_layers)) - set(by_layer))
    if missing:
        raise PermanentEngineError(
            f"The replacement model needs a transcoder for every layer 0..{n_layers - 1}; "
            f"missing layers {missing}."
        )
    widths = {lens.cfg.d_sae for lens in by_layer.values()}
    if len(widths) != 1:
        raise PermanentEngineError(f"All transcoders must have the same width, got {widths}.")
    return [by_layer[layer] for layer in range(n_layers)]


def circuit_tracer_tensors(lens) -> dict[str, Any]:
    """One layer in circuit-tracer's file layout (its ``load_relu_transcoder`` keys)."""
    tensors = {
        "W_enc": lens.W_enc.detach().T.contiguous(),
        "W_dec": lens.W_dec.detach().contiguous(),
        "b_enc": lens.b_enc.detach().contiguous(),
        "b_dec": lens.b_dec.detach().contiguous(),
    }
    threshold = getattr(lens, "threshold", None)
    if threshold is not None:
        if bool((threshold < 0).any()):
            raise PermanentEngineError(
                "A JumpReLU threshold is negative; SAELens (relu then threshold) and "
                "circuit-tracer (threshold only) would then compute different features."
            )
        tensors["activation_function.threshold"] = threshold.detach().contiguous()
    return tensors


# --- the set in circuit-tracer ---------------------------------------------------------------


def circuit_tracer_hooks(architecture: str) -> dict[str, str]:
    """circuit-tracer's hook names for what a set reads and writes, in this architecture.

    Its nnsight mapping names the MLP output ``mlp.hook_out`` where that is what the block
    adds (Llama, Qwen3), and has only ``hook_mlp_out`` for Gemma 3, where the block adds the
    post-MLP norm's output (``HOOK_OUT`` there, and what Gemma sets are trained to write)."""
    circuit_tracer()
    from circuit_tracer.utils.tl_nnsight_mapping import get_mapping

    try:
        known = get_mapping(architecture).feature_hook_mapping
    except ValueError as exc:
        raise PermanentEngineError(
            f"circuit-tracer has no mapping for {architecture}; circuit tracing cannot run on "
            "this architecture."
        ) from exc
    if CIRCUIT_TRACER_HOOKS["feature_output_hook"] in known:
        return dict(CIRCUIT_TRACER_HOOKS)
    return {**CIRCUIT_TRACER_HOOKS, "feature_output_hook": "hook_mlp_out"}


def to_circuit_tracer(
    lenses: Sequence, *, scan: str, device: str = "cpu", dtype=None, hooks: dict | None = None
):
    """A circuit-tracer ``TranscoderSet`` holding the same tensors as the ordered lenses
    (``hooks``: ``circuit_tracer_hooks`` of the model's architecture; default Llama's)."""
    import torch

    circuit_tracer()
    from circuit_tracer.transcoder import TranscoderSet
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder

    dtype = dtype or torch.float32
    layers = {}
    for layer, lens in enumerate(lenses):
        tensors = {
            k: v.to(device=device, dtype=dtype) for k, v in circuit_tracer_tensors(lens).items()
        }
        threshold = tensors.get("activation_function.threshold")
        activation = JumpReLU(threshold, 0.1) if threshold is not None else torch.nn.functional.relu
        d_sae, d_model = tensors["W_enc"].shape
        with torch.device("meta"):
            transcoder = SingleLayerTranscoder(d_model, d_sae, activation, layer)
        transcoder.load_state_dict(tensors, assign=True)
        layers[layer] = transcoder.to(device=device, dtype=dtype)
    return TranscoderSet(layers, scan=scan, **(hooks or CIRCUIT_TRACER_HOOKS))


def export_circuit_tracer(lenses: Sequence, out_dir: Path, *, scan: str) -> dict[str, Any]:
    """Write circuit-tracer's on-disk layout (``layer_{i}.safetensors`` + ``config.yaml``).

    The config lists absolute paths: circuit-tracer resolves them as given.
    """
    import yaml
    from safetensors.torch import save_file

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for layer, lens in enumerate(lenses):
        path = out_dir / f"layer_{layer}.safetensors"
        save_file({k: v.cpu() for k, v in circuit_tracer_tensors(lens).items()}, str(path))
        files.append(str(path))
    config = {"model_kind": "transcoder_set", "scan": scan, "transcoders": files}
    config.update(CIRCUIT_TRACER_HOOKS)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    return config


# --- the shipped set: manifest and digests ---------------------------------------------------


@dataclass(frozen=True)
class TranscoderSetInfo:
    root: Path
    manifest: dict[str, Any]

    @property
    def n_layers(self) -> int:
        return int(self.manifest["n_layers"])

    @property
    def scan(self) -> str:
        return str(self.manifest["scan"])

    def layer_dir(self, layer: int) -> Path:
        return self.root / LAYER_DIR.format(layer)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(root: Path, manifest: dict[str, Any]) -> Path:
    """Record the sha256 of every file under the layer folders in ``transcoders.json``."""
    root = Path(root)
    files = {
        str(path.relative_to(root)): file_sha256(path)
        for path in sorted(root.glob("layer_*/*"))
        if path.is_file()
    }
    body = {**manifest, "format": SET_FORMAT, "files": files}
    (root / SET_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return root / SET_FILE


def read_set(root: str | Path, *, verify: bool = True) -> TranscoderSetInfo:
    """Read a set's manifest and (by default) check every listed file against its sha256."""
    root = Path(root)
    try:
        manifest = json.loads((root / SET_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PermanentEngineError(
            f"{root} is not a transcoder set: cannot read {SET_FILE} ({exc})."
        ) from exc
    if manifest.get("format") != SET_FORMAT:
        raise PermanentEngineError(f"{root / SET_FILE} is not of format {SET_FORMAT}.")
    if verify:
        _verify(root, manifest["files"])
    return TranscoderSetInfo(root=root, manifest=manifest)


def _verify(root: Path, files: dict[str, str]) -> None:
    bad = []
    for name, expected in sorted(files.items()):
        path = root / name
        if not path.is_file() or file_sha256(path) != expected:
            bad.append(name)
    listed = {str(p.relative_to(root)) for p in root.glob("layer_*/*") if p.is_file()}
    extra = sorted(listed - set(files))
    if bad or extra:
        raise PermanentEngineError(
            f"The transcoder set in {root} does not match its manifest: changed or missing "
            f"{bad}, unlisted {extra}. Restore it from the repository (or retrain it)."
        )


def load_set_lenses(info: TranscoderSetInfo, *, device: str = "cpu", dtype: str = "float32"):
    """Every layer's lens, loaded with SAELens, in layer order."""
    from interp_jobs.engine.loading.lenses import load_lens

    lenses = [
        load_lens(info.layer_dir(i), device=device, dtype=dtype) for i in range(info.n_layers)
    ]
    return order_layers(lenses, info.n_layers)


def attribution_dir(loaded, path: str | Path, fmt: str, *, digest: str, work_dir: Path) -> Path:
    """A Hugging Face directory with the loaded model's exact weights, for circuit-tracer.

    circuit-tracer's nnsight backend loads its model from a directory. A registered HF
    directory is used as it is; a GGUF model is exported once in float32 (the dequantized
    weights, bit for bit) under ``work_dir/hf-exports/<digest>`` and reused. The export is
    written and read by the same transformers version (a 5.x directory read by 4.x silently
    loses its RoPE base), and callers compare the logits of what they attribute with the
    loaded model's (``analysis.circuits.logit_difference``).
    """
    import os
    import shutil
    import tempfile

    from interp_jobs.engine.loading.export import _plain_copy
    from interp_jobs.engine.loading.models import DTYPES

    if fmt == "hf_dir":
        return Path(path)
    key = digest or file_sha256(Path(path))
    out = Path(work_dir) / "hf-exports" / hashlib.sha256(key.encode()).hexdigest()[:32]
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        _plain_copy(loaded.model, DTYPES["float32"]).save_pretrained(staging)
        loaded.tokenizer.save_pretrained(staging)
        (staging / "assay-source.txt").write_text(f"{Path(path).name}\n{key}\n")
        os.rename(staging, out)  # atomic; a concurrent exporter that won leaves ours behind
    except OSError:
        if not (out / "config.json").is_file():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out
