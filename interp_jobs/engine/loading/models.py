"""Load a causal language model from local disk: a Hugging Face directory or a GGUF file.

Nothing is ever fetched from a hub (``local_files_only=True``): what the engine measures must
be exactly the files that were registered and fingerprinted, not whatever a hub serves today.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from interp_jobs.engine.errors import EngineError, PermanentEngineError
from interp_jobs.engine.loading.architectures import check_layout, family_for

FORMATS = ("hf_dir", "gguf")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: Any  # a transformers *ForCausalLM in eval mode, parameters frozen
    tokenizer: Any
    family: str  # "llama" or "gpt2": decides where hooks attach
    n_layers: int
    d_model: int
    device: str
    dtype: str
    model_type: str  # the config's model_type, e.g. "llama", "qwen2", "gpt2"

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def chat_prompt(self, user_text: str) -> str:
        """The text the model sees for a single user turn, ready for generation.

        Base models without a chat template get the plain text, so the same probe set runs
        on base and instruct models alike.
        """
        if not self.has_chat_template:
            return user_text
        messages = [{"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def encode(self, texts: str | Sequence[str], *, chat: bool = False) -> dict:
        """Tokenize to tensors on the model's device (padded when several texts are given).

        With ``chat=True`` the texts are user turns wrapped by ``chat_prompt``; the template
        already writes the special tokens, so the tokenizer must not add a second BOS.
        """
        texts = [texts] if isinstance(texts, str) else list(texts)
        add_special = True
        if chat:
            texts = [self.chat_prompt(t) for t in texts]
            add_special = not self.has_chat_template
        enc = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=add_special
        )
        return {k: v.to(self.device) for k, v in enc.items()}


def load_model(
    path: str | Path, fmt: str, *, device: str = "cpu", dtype: str = "float32"
) -> LoadedModel:
    """Load a local model for inspection. Raises PermanentEngineError for bad inputs."""
    torch_dtype = _parse_dtype(dtype)
    _check_device(device)
    directory, source_kwargs = _resolve_source(Path(path), fmt)
    if fmt == "hf_dir":
        # config.json is cheap to read, so refuse unsupported models before loading weights.
        # A GGUF's config costs a full metadata parse (seconds), so it is checked after.
        family_for(getattr(_load_config(directory, source_kwargs), "model_type", None))
    model = _load_weights(directory, source_kwargs, torch_dtype, device)
    config = model.config
    family = family_for(config.model_type)
    tokenizer = _load_tokenizer(directory, source_kwargs)
    n_layers, d_model = config.num_hidden_layers, config.hidden_size
    check_layout(model, family, n_layers)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        family=family.name,
        n_layers=n_layers,
        d_model=d_model,
        device=device,
        dtype=dtype,
        model_type=config.model_type,
    )


def _parse_dtype(dtype: str) -> torch.dtype:
    if dtype not in DTYPES:
        raise PermanentEngineError(f"Unsupported dtype {dtype!r}; use one of: {', '.join(DTYPES)}.")
    return DTYPES[dtype]


def _check_device(device: str) -> None:
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise PermanentEngineError(f"Unsupported device {device!r}; use 'cpu' or 'cuda[:N]'.")
    if not torch.cuda.is_available():
        raise PermanentEngineError(
            f"Device {device!r} was requested but no CUDA GPU is available on this worker; "
            "route the check to a GPU queue or set the device to 'cpu'."
        )


def _resolve_source(path: Path, fmt: str) -> tuple[Path, dict]:
    """Split the registered path into the directory transformers loads from and extra kwargs."""
    if fmt == "hf_dir":
        return _resolve_hf_dir(path), {}
    if fmt == "gguf":
        return path.parent, {"gguf_file": _resolve_gguf(path).name}
    raise PermanentEngineError(f"Unknown model format {fmt!r}; use one of: {', '.join(FORMATS)}.")


def _resolve_hf_dir(path: Path) -> Path:
    if not path.is_dir():
        raise PermanentEngineError(
            f"Model directory {path} does not exist or is not a directory; register the path "
            "of a local Hugging Face model directory (the one holding config.json)."
        )
    if not (path / "config.json").is_file():
        raise PermanentEngineError(
            f"{path} has no config.json, so it is not a Hugging Face model directory; point "
            "at the directory that holds config.json and the weight files."
        )
    return path


def _resolve_gguf(path: Path) -> Path:
    if not path.is_file():
        raise PermanentEngineError(
            f"GGUF file {path} does not exist; register the path of a single .gguf file."
        )
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise PermanentEngineError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes); "
            "the file is corrupt or of another format."
        )
    return path


@contextmanager
def _loading(what: str, where: Path) -> Iterator[None]:
    """Turn library errors during loading into engine errors that say what failed.

    Files on local disk do not fix themselves, so parse and shape failures are permanent;
    running out of memory may not recur on another worker, so it stays retryable.
    """
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise EngineError(f"Out of memory while loading the {what} from {where}.") from exc
    except PermanentEngineError:
        raise
    except Exception as exc:  # transformers, safetensors and gguf raise many unrelated types
        raise PermanentEngineError(
            f"Could not load the {what} from {where}: {type(exc).__name__}: {exc}. "
            "Check that the files are complete and uncorrupted (re-copy them and register "
            "again)."
        ) from exc


def _where(directory: Path, source_kwargs: dict) -> Path:
    """The file or directory to name in error messages."""
    return directory / source_kwargs.get("gguf_file", "")


def _load_config(directory: Path, source_kwargs: dict):
    from transformers import AutoConfig

    with _loading("model config", _where(directory, source_kwargs)):
        return AutoConfig.from_pretrained(directory, local_files_only=True, **source_kwargs)


def _load_tokenizer(directory: Path, source_kwargs: dict):
    from transformers import AutoTokenizer

    with _loading("tokenizer", _where(directory, source_kwargs)):
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **source_kwargs)
    # Batches of probe prompts need padding; many causal LM tokenizers ship without a pad
    # token, and padded positions are masked anyway, so reusing EOS is harmless.
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _load_weights(directory: Path, source_kwargs: dict, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM

    with _loading("model weights", _where(directory, source_kwargs)):
        model = AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, dtype=dtype, **source_kwargs
        )
        model.to(device)  # type: ignore[arg-type] # transformers' stub mistypes .to
    model.eval()
    # Evidence never trains the model. Gradients (for attribution) flow only to activations
    # that ask for them, which saves memory and keeps the weights bit-identical.
    model.requires_grad_(False)
    return model
