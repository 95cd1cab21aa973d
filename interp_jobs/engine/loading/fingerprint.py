"""Digests of a model's files on disk, in a form an auditor can recompute with sha256sum.

A group digest (weights, tokenizer, config) is the sha256 of the group's lines in
`sha256sum` format ("<hex>  <relative path>\\n"), sorted by path. A GGUF file carries its
tokenizer and config inside, so all three digests of a GGUF model are the file's own sha256.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from interp_jobs.engine.errors import EngineError, PermanentEngineError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
TOKENIZER_FILES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
        "vocab.txt",
        "added_tokens.json",
        "chat_template.jinja",
    }
)
CONFIG_FILES = frozenset({"config.json", "generation_config.json"})
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFingerprint:
    files: dict[str, str]  # relative path -> sha256
    weights_digest: str
    tokenizer_digest: str
    config_digest: str


# Markers of a download or copy still in progress (the Hugging Face hub's convention).
IN_PROGRESS_SUFFIXES = (".incomplete", ".lock", ".partial")


def _refuse_if_being_written(folder: Path) -> None:
    busy = sorted(
        item.name for item in folder.rglob("*") if item.name.endswith(IN_PROGRESS_SUFFIXES)
    )
    if busy:
        # Transient: the copy will finish, so the worker retries with backoff.
        raise EngineError(
            f"model files under {folder} are still being written "
            f"({', '.join(busy[:5])}); retrying later"
        )


def model_files(path: Path, fmt: str) -> dict[str, Path]:
    """Every file that makes up the model, by relative path (hidden files excluded)."""
    if fmt in ("gguf", "hf_dir") and path.parent.is_dir():
        _refuse_if_being_written(path if fmt == "hf_dir" and path.is_dir() else path.parent)
    if fmt == "gguf":
        if not path.is_file():
            raise PermanentEngineError(f"GGUF model file {path} does not exist or is not a file")
        return {path.name: path}
    if fmt != "hf_dir":
        raise PermanentEngineError(f"unknown model format {fmt!r}; use 'hf_dir' or 'gguf'")
    if not path.is_dir():
        raise PermanentEngineError(f"model directory {path} does not exist or is not a directory")
    files = {
        item.relative_to(path).as_posix(): item
        for item in sorted(path.rglob("*"))
        if item.is_file() and not any(part.startswith(".") for part in item.relative_to(path).parts)
    }
    if not any(name.endswith(WEIGHT_SUFFIXES) for name in files):
        raise PermanentEngineError(
            f"model directory {path} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})"
        )
    return files


def file_sha256(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def group_digest(files: dict[str, str]) -> str:
    lines = "".join(f"{files[name]}  {name}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest() if files else ""


def hash_files(
    files: dict[str, Path], progress: Callable[[float], None] | None = None
) -> dict[str, str]:
    total = sum(item.stat().st_size for item in files.values()) or 1
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        if progress:
            progress(done / total)

    return {name: file_sha256(item, advance) for name, item in files.items()}


def fingerprint_model(
    path: Path, fmt: str, progress: Callable[[float], None] | None = None
) -> ModelFingerprint:
    digests = hash_files(model_files(Path(path), fmt), progress)
    if fmt == "gguf":
        (only,) = digests.values()
        return ModelFingerprint(digests, only, only, only)
    return ModelFingerprint(
        files=digests,
        weights_digest=group_digest(_select(digests, _is_weights)),
        tokenizer_digest=group_digest(_select(digests, lambda n: _base(n) in TOKENIZER_FILES)),
        config_digest=group_digest(_select(digests, lambda n: _base(n) in CONFIG_FILES)),
    )


def _is_weights(name: str) -> bool:
    return name.endswith(WEIGHT_SUFFIXES)


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _select(digests: dict[str, str], keep: Callable[[str], bool]) -> dict[str, str]:
    return {name: digest for name, digest in digests.items() if keep(name)}
