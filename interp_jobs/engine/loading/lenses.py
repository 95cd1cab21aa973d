"""Load lenses (SAEs and transcoders) in SAELens's on-disk format and check they fit a model.

A lens is only evidence about the model whose activations it reads: a lens of the wrong
width, or one pointed at a hook the model does not have, is refused before any check runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from interp_jobs.engine.errors import PermanentEngineError
from interp_jobs.engine.hooks import hook_width, parse_hook_name
from interp_jobs.engine.loading.models import DTYPES

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


def load_lens(path: str | Path, *, device: str = "cpu", dtype: str = "float32"):
    """Load any lens architecture sae_lens knows (standard, topk, jumprelu, gated, ...)."""
    from sae_lens import SAE

    directory = Path(path)
    _check_lens_files(directory)
    _check_architecture(_read_cfg(directory), directory)
    if dtype not in DTYPES:
        raise PermanentEngineError(f"Unsupported dtype {dtype!r}; use one of: {', '.join(DTYPES)}.")
    try:
        lens = SAE.load_from_disk(directory, device=device, dtype=dtype)
    except Exception as exc:  # sae_lens and safetensors raise many unrelated types
        raise PermanentEngineError(
            f"Could not load the lens in {directory}: {type(exc).__name__}: {exc}. Check that "
            f"{CFG_FILE} and {WEIGHTS_FILE} were saved together by SAELens and are complete."
        ) from exc
    lens.eval()
    # Parameters stay fixed; attribution differentiates with respect to activations only.
    lens.requires_grad_(False)
    return lens


def _check_lens_files(directory: Path) -> None:
    missing = [name for name in (CFG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        raise PermanentEngineError(
            f"{directory} is not a lens in SAELens's on-disk format: missing "
            f"{', '.join(missing)}. Save the lens with sae_lens (SAE.save_model) and register "
            "that directory."
        )


def _read_cfg(directory: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((directory / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PermanentEngineError(
            f"{directory / CFG_FILE} is not readable JSON ({exc}); re-save the lens."
        ) from exc
    if not isinstance(cfg, dict):
        raise PermanentEngineError(f"{directory / CFG_FILE} must hold a JSON object.")
    return cfg


def _check_architecture(cfg: dict[str, Any], directory: Path) -> None:
    from sae_lens.registry import SAE_CLASS_REGISTRY

    # Configs written before sae_lens 6 carry no architecture and mean "standard".
    architecture = cfg.get("architecture", "standard")
    if architecture not in SAE_CLASS_REGISTRY:
        raise PermanentEngineError(
            f"The lens in {directory} has architecture {architecture!r}, which the installed "
            f"sae_lens cannot load (known: {', '.join(sorted(SAE_CLASS_REGISTRY))})."
        )


def lens_hook_name(lens) -> str:
    name = lens.cfg.metadata.hook_name
    if not name:
        raise PermanentEngineError(
            "The lens config does not say which hook point it reads (metadata.hook_name); "
            "set it when training or saving the lens."
        )
    return name


def check_lens_fits(lens, loaded) -> None:
    """Raise PermanentEngineError unless ``lens`` reads (and writes) hook points of ``loaded``."""
    if lens.cfg.reshape_activations != "none" or lens.cfg.metadata.hook_head_index is not None:
        raise PermanentEngineError(
            "Lenses on per-head attention activations (hook_z / hook_head_index) are not "
            "supported; use a lens on the residual stream, attention output or MLP."
        )
    _check_hook_width(lens_hook_name(lens), "reads", lens.cfg.d_in, loaded)
    hook_name_out = lens.cfg.metadata.hook_name_out
    if hook_name_out:
        _check_hook_width(hook_name_out, "writes", lens.cfg.d_out, loaded)


def _check_hook_width(name: str, verb: str, lens_width: int, loaded) -> None:
    try:
        parse_hook_name(name, n_layers=loaded.n_layers)
    except PermanentEngineError as exc:
        raise PermanentEngineError(
            f"The lens {verb} hook point {name!r}, which this model does not have: {exc}"
        ) from exc
    model_width = hook_width(loaded, name)
    if lens_width != model_width:
        raise PermanentEngineError(
            f"Lens width mismatch at {name}: the lens {verb} vectors of width {lens_width}, "
            f"but the model's activations there have width {model_width}. This lens was "
            "trained on a different model; register a lens trained on this model version."
        )


def lens_info(lens) -> dict[str, Any]:
    """The facts about a lens that records and provenance need, as plain JSON values."""
    cfg = lens.cfg
    return {
        "architecture": cfg.architecture(),
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "d_out": getattr(cfg, "d_out", None),  # transcoders only
        "hook_name": cfg.metadata.hook_name,
        "hook_name_out": cfg.metadata.hook_name_out,  # transcoders only
        "model_name": cfg.metadata.model_name,
        "dtype": str(lens.dtype).removeprefix("torch."),
    }
