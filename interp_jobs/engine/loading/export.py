"""Export a loaded model as a Hugging Face directory in another precision.

The demo uses this to make a second, real model version (a bf16 export of the GGUF model), the
kind of conversion whose effect on risk features version_drift is there to measure.
"""

from pathlib import Path

import torch

from interp_jobs.engine.loading.models import DTYPES


def export_hf(loaded, out_dir: Path, *, dtype: str = "bfloat16") -> Path:
    """Write model and tokenizer to out_dir (atomically: a temp dir renamed into place)."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    staging = out_dir.with_name(out_dir.name + ".staging")
    staging.mkdir(parents=True, exist_ok=True)
    _plain_copy(loaded.model, DTYPES[dtype]).save_pretrained(staging)
    loaded.tokenizer.save_pretrained(staging)
    staging.rename(out_dir)
    return out_dir


def greedy_next_token(loaded, prompt: str) -> str:
    """The model's own most likely next token after prompt (no chat template)."""
    enc = loaded.encode(prompt)
    with torch.inference_mode():
        logits = loaded.model(**enc).logits[0, -1]
    return loaded.tokenizer.decode([int(logits.argmax())])


def _plain_copy(model, dtype: torch.dtype):
    """An unquantized copy of the model in dtype. A model loaded from GGUF is marked as
    quantized and transformers refuses to save it, although its weights are already plain
    dequantized tensors: rebuild it from its config without the quantization record."""
    import copy

    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=dtype)
    plain.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    return plain.eval()


def attribution_dir(loaded, path: str | Path, fmt: str, *, digest: str, work_dir: Path) -> Path:
    """A Hugging Face directory with the loaded model's exact weights, for circuit-tracer.

    circuit-tracer's nnsight backend loads its model from a directory. A registered HF
    directory is used as it is; a GGUF model is exported once in float32 (the dequantized
    weights, bit for bit) under ``work_dir/hf-exports/<digest>`` and reused. The export is
    written and read by the same transformers version (a 5.x directory read by 4.x silently
    loses its RoPE base), and callers compare the logits of what they attribute with the
    loaded model's (``analysis.circuits.logit_difference``).
    """
    import hashlib
    import os
    import shutil
    import tempfile

    if fmt == "hf_dir":
        return Path(path)
    key = digest or _file_sha256(Path(path))
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


def _file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
