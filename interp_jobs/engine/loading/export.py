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
