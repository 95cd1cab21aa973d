"""Which model and lens a benchmark runs on.

The default is the demo model (SmolLM2-135M-Instruct, GGUF) with the shipped SmolLM2 lens. Where
no lens is shipped yet, a random standard SAE on the residual stream after the middle block is
made for the run: speed and memory depend on the lens's shape and architecture, not on what it
learned, so the figures stand, but the line's notes say so.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness import ROOT

from demo.model_fetch import demo_model_path  # stdlib only: cheap to import

# The same model store the SmolLM2 tests read (tests/factories.py).
DEFAULT_MODEL = demo_model_path(os.environ.get("ASSAY_MODEL_STORE", ROOT / "var" / "models"))
SHIPPED_LENSES = ROOT / "interp_jobs" / "lenses"
RANDOM_D_SAE = 4096


@dataclass(frozen=True)
class Lens:
    path: str
    source: str  # "given", "shipped" or "random"


def model_format(path: str) -> str:
    return "gguf" if path.endswith(".gguf") else "hf_dir"


def load(path: str):
    from interp_jobs.engine.loading.models import load_model

    return load_model(path, model_format(path))


def model_shape(path: str) -> tuple[int, int]:
    """(layers, width) from the config alone, without loading the weights."""
    from transformers import AutoConfig

    source = Path(path)
    if model_format(path) == "gguf":
        config = AutoConfig.from_pretrained(
            source.parent, gguf_file=source.name, local_files_only=True
        )
    else:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
    return config.num_hidden_layers, config.hidden_size


def _is_default_model(path: str) -> bool:
    return Path(path).resolve() == DEFAULT_MODEL.resolve()


def _shipped_lens() -> Path | None:
    found = sorted(cfg.parent for cfg in SHIPPED_LENSES.glob("smollm2-*/cfg.json"))
    return found[0] if found else None


def resolve_lens(args, shape: Callable[[], tuple[int, int]]) -> Lens:
    """--lens if given; the shipped SmolLM2 lens for the default model; else a random one
    on the residual stream after the middle block (``shape()`` gives layers and width)."""
    if args.lens:
        return Lens(args.lens, "given")
    shipped = _shipped_lens() if _is_default_model(args.model) else None
    if shipped is not None:
        return Lens(str(shipped), "shipped")
    n_layers, d_model = shape()
    directory = Path(tempfile.mkdtemp(prefix="assay-bench-lens-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    from tests.factories import save_random_lens

    return Lens(
        str(
            save_random_lens(
                directory,
                hook_name=f"blocks.{n_layers // 2}.hook_resid_post",
                d_in=d_model,
                d_sae=RANDOM_D_SAE,
            )
        ),
        "random",
    )


def load_lens(path: str, loaded):
    from interp_jobs.engine.loading.lenses import check_lens_fits, load_lens

    lens = load_lens(path)
    check_lens_fits(lens, loaded)
    return lens


def _shown(path: str) -> str:
    resolved = Path(path).resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def describe(model_path: str, lens: Lens) -> dict:
    """The ``model`` field of every line: what was measured."""
    cfg = json.loads((Path(lens.path) / "cfg.json").read_text(encoding="utf-8"))
    return {
        "path": _shown(model_path),
        "format": model_format(model_path),
        "lens": {
            "path": _shown(lens.path),
            "source": lens.source,
            "hook": cfg.get("metadata", {}).get("hook_name"),
            "architecture": cfg.get("architecture", "standard"),
            "d_in": cfg.get("d_in"),
            "d_sae": cfg.get("d_sae"),
        },
    }


def lens_note(lens: Lens, model_path: str) -> str:
    if lens.source != "random":
        return f"Lens: {lens.source} ({Path(lens.path).name})."
    why = (
        "No SmolLM2 lens is shipped yet (interp_jobs/lenses/smollm2-*), so a"
        if _is_default_model(model_path)
        else "No lens was given, so a"
    )
    return (
        f"{why} random standard SAE (d_sae {RANDOM_D_SAE}, seeded) was made for this run; "
        "speed and memory depend on the lens's shape and architecture, not on what it "
        "learned."
    )
