"""The pieces that bind a check to the registered files: the stat-keyed digest cache, the
listing that refuses links out of the roots, and cache keys that carry the registered digest."""

import hashlib
import os
import time
from pathlib import Path

import pytest

from interp_jobs.checks import inputs, weights_fingerprint
from interp_jobs.checks.base import CheckContext, ModelRef
from interp_jobs.engine.errors import EngineError, PermanentEngineError
from interp_jobs.engine.loading import cache, fingerprint
from interp_jobs.engine.loading.fingerprint import DigestCache, fingerprint_model, model_files
from tests.factories import save_tiny_llama

LATER = 3_600 * 10**9  # an hour: every file of the test counts as settled


@pytest.fixture
def reads(monkeypatch) -> list[Path]:
    """Every file whose bytes are read to hash it."""
    seen: list[Path] = []
    real = fingerprint.file_sha256

    def counting(path, on_bytes=None):
        seen.append(path)
        return real(path, on_bytes)

    monkeypatch.setattr(fingerprint, "file_sha256", counting)
    return seen


def _settled_cache() -> DigestCache:
    return DigestCache(clock=lambda: time.time_ns() + LATER)


def _next_ctime_tick(path: Path) -> None:
    """Wait until a change to ``path`` would get a new ctime (timestamps are coarse)."""
    before = path.stat().st_ctime_ns
    probe = path.with_name(path.name + ".tick")
    for _ in range(1000):
        probe.write_bytes(b"")
        now = probe.stat().st_ctime_ns
        probe.unlink()
        if now > before:
            return
        time.sleep(0.005)
    raise AssertionError("the file system's clock did not move")


def test_an_untouched_file_is_hashed_once(tmp_path, reads):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 4096)
    digests = _settled_cache()
    first, _ = digests.sha256(weights)
    second, _ = digests.sha256(weights)
    assert first == second == hashlib.sha256(b"w" * 4096).hexdigest()
    assert reads == [weights]
    assert digests.stats == {"hits": 1, "hashed": 1}


def test_a_same_size_rewrite_with_mtime_put_back_is_hashed_again(tmp_path, reads):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    digests = _settled_cache()
    first, _ = digests.sha256(weights)
    _next_ctime_tick(weights)
    before = weights.stat()
    weights.write_bytes(b"b" * 4096)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = weights.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    second, _ = digests.sha256(weights)
    assert second != first
    assert len(reads) == 2


def test_a_file_replaced_by_rename_is_hashed_again(tmp_path, reads):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    digests = _settled_cache()
    digests.sha256(weights)
    replacement = tmp_path / "new"
    replacement.write_bytes(b"b" * 4096)
    os.replace(replacement, weights)
    assert digests.sha256(weights)[0] == hashlib.sha256(b"b" * 4096).hexdigest()
    assert len(reads) == 2


def test_a_file_changed_in_the_last_seconds_is_never_served_from_memory(tmp_path, reads):
    """Timestamps are coarse: a write in the same tick as the hash would keep the signature,
    so a freshly written file is hashed every time until it has settled."""
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"w" * 4096)
    digests = DigestCache()
    digests.sha256(weights)
    digests.sha256(weights)
    assert len(reads) == 2


def test_a_file_written_while_it_is_hashed_is_not_trusted(tmp_path, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    real = fingerprint.file_sha256

    def hash_then_write(path, on_bytes=None):
        digest = real(path, on_bytes)
        _next_ctime_tick(path)
        path.write_bytes(b"b" * 4096)
        return digest

    monkeypatch.setattr(fingerprint, "file_sha256", hash_then_write)
    with pytest.raises(EngineError, match="changed while it was being hashed"):
        _settled_cache().sha256(weights)


def test_changed_since_names_files_that_moved_after_verification(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 4096)
    _, snapshot = fingerprint.measure({"model.safetensors": weights}, _settled_cache())
    assert fingerprint.changed_since(snapshot) == []
    _next_ctime_tick(weights)
    os.utime(weights)
    assert fingerprint.changed_since(snapshot) == [str(weights)]


# --- listing with roots ------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path) -> Path:
    folder = tmp_path / "store" / "model"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_a_link_out_of_the_roots_is_refused_naming_link_and_target(model_dir):
    (model_dir / "vocab.txt").symlink_to("/etc/passwd")
    with pytest.raises(PermanentEngineError) as refused:
        model_files(model_dir, "hf_dir", roots=[model_dir.parent])
    assert f"{model_dir / 'vocab.txt'} is a symbolic link to /etc/passwd" in str(refused.value)


def test_a_hidden_link_out_of_the_roots_is_refused_too(model_dir):
    (model_dir / ".secret").symlink_to("/etc/passwd")
    with pytest.raises(PermanentEngineError, match="symbolic link to /etc/passwd"):
        model_files(model_dir, "hf_dir", roots=[model_dir.parent])


def test_a_link_loop_is_refused(model_dir):
    (model_dir / "again").symlink_to(model_dir, target_is_directory=True)
    with pytest.raises(PermanentEngineError, match="a loop"):
        model_files(model_dir, "hf_dir", roots=[model_dir.parent])


def test_a_linked_directory_inside_the_roots_is_listed_through_the_link(model_dir):
    shards = model_dir.parent / "shards"
    shards.mkdir()
    (shards / "part-1.safetensors").write_bytes(b"part")
    (model_dir / "shards").symlink_to(shards, target_is_directory=True)
    files = model_files(model_dir, "hf_dir", roots=[model_dir.parent])
    assert sorted(files) == ["config.json", "model.safetensors", "shards/part-1.safetensors"]


def test_a_gguf_file_that_is_a_link_out_of_the_roots_is_refused(tmp_path):
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    (elsewhere / "m.gguf").write_bytes(b"GGUF")
    (store / "m.gguf").symlink_to(elsewhere / "m.gguf")
    with pytest.raises(PermanentEngineError, match="outside the allowed roots"):
        model_files(store / "m.gguf", "gguf", roots=[store])


def test_without_roots_links_are_followed_as_before(model_dir):
    (model_dir / "vocab.txt").symlink_to("/etc/hostname")
    assert "vocab.txt" in model_files(model_dir, "hf_dir")


# --- the cache of loaded models keys on the registered digest ------------------------------


@pytest.fixture
def fresh_cache():
    cache.clear_cache()
    fingerprint.digest_cache.clear()
    yield
    cache.clear_cache()
    fingerprint.digest_cache.clear()


def _ref(path: Path) -> ModelRef:
    recorded = fingerprint_model(path, "hf_dir")
    return ModelRef(
        path=str(path),
        format="hf_dir",
        weights_digest=recorded.weights_digest,
        file_digests=recorded.files,
        name="tiny@1",
    )


def _context(ref: ModelRef) -> CheckContext:
    return CheckContext(
        model=ref,
        parameters=weights_fingerprint.Parameters(),
        thresholds=weights_fingerprint.Thresholds(),
    )


def test_swapped_files_at_the_same_path_fail_verification_and_get_no_cached_model(
    fresh_cache, tmp_path, settings
):
    from interp_jobs.worker import binding

    settings.ASSAY_MODEL_ROOTS = [tmp_path]
    path = save_tiny_llama(tmp_path / "model")
    registered = _context(_ref(path))
    binding.verify_context(registered)
    loaded = inputs.load_model_for(registered)
    save_tiny_llama(path, seed=1)  # the insider's swap: same names, same sizes, other weights
    with pytest.raises(PermanentEngineError, match=r"model\.safetensors \(changed\)"):
        binding.verify_context(registered)
    # A reference to the new files (a new registration) is a new cache entry, never the old one.
    swapped = _context(_ref(path))
    misses = cache.stats["misses"]
    assert inputs.load_model_for(swapped) is not loaded
    assert cache.stats["misses"] == misses + 1
    assert inputs.load_model_for(registered) is loaded  # the old digest keeps its own entry
