"""Attacks on the binding between evidence and the registered files.

The attackers: an insider with a shell on the model store, who swaps weights or a lens after
registration (and covers the tracks by restoring the modification time), and a submitter who
registers a directory holding a symbolic link that leads out of the store. Each attack must end
in a check run that errors, names what was wrong and stores no evidence, or in a digest or lens
job that fails with the reason; never in evidence about other bytes signed as the registered.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

from audits import actions
from audits.models import CheckRun, Lens, ModelVersion
from interp_jobs.checks import sae_fidelity
from interp_jobs.engine.loading import cache, fingerprint
from interp_jobs.worker.tasks import compute_model_digests, run_check, validate_lens
from tests.factories import save_random_lens, save_tiny_llama

FIDELITY = {"key": "fidelity", "kind": "sae_fidelity", "parameters": {"n_sequences": 2}}
FINGERPRINT = {"key": "fingerprint", "kind": "weights_fingerprint"}


@pytest.fixture(autouse=True)
def fresh_worker_memory():
    """Each test starts like a fresh worker process: nothing loaded, nothing hashed."""
    cache.clear_cache()
    fingerprint.digest_cache.clear()
    yield
    cache.clear_cache()
    fingerprint.digest_cache.clear()


@pytest.fixture
def long_running_worker(monkeypatch):
    """A worker whose files were written long ago: their digests are remembered by stat
    signature (files written in the last seconds never are), which is what an attacker who
    rewrites them in place has to get past."""
    later = time.time_ns() + 3_600 * 10**9
    monkeypatch.setattr(fingerprint.digest_cache, "_clock", lambda: later)


@pytest.fixture
def outside(tmp_path) -> Path:
    """A directory outside every allowed root (the store is tmp_path / "models")."""
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


def _register_model(personas, path: Path, version: str = "1") -> ModelVersion:
    model_version = actions.register_model_version(
        actor=personas.submitter,
        family="tiny-llama",
        version=version,
        fmt="hf_dir",
        source_path=str(path.resolve()),
    )
    compute_model_digests(str(model_version.pk))
    model_version.refresh_from_db()
    return model_version


def _register_lens(personas, model_version, path: Path) -> Lens:
    lens = actions.register_lens(
        actor=personas.submitter, model_version=model_version, name="mid", source_path=str(path)
    )
    validate_lens(str(lens.pk))
    return Lens.objects.get(pk=lens.pk)


@pytest.fixture
def store(model_store, settings):
    settings.ASSAY_LENS_ROOTS = settings.ASSAY_MODEL_ROOTS
    return model_store


@pytest.fixture
def registered(personas, store):
    """A loadable tiny model and a lens for it, registered, digested and validated."""
    model_version = _register_model(personas, save_tiny_llama(store / "llama"))
    lens = _register_lens(personas, model_version, save_random_lens(store / "lens"))
    assert (model_version.digest_status, lens.status) == ("computed", "ready"), lens.error
    return model_version, lens


def _policy(personas, *checks):
    draft = actions.create_policy(actor=personas.admin, name="binding", checks=list(checks))
    return actions.publish_policy(actor=personas.admin, policy=draft)


def _open(personas, model_version, policy):
    # An evaluation runs the policy's checks without it being assigned to the family.
    release, _ = actions.open_release(
        actor=personas.submitter, model_version=model_version, policy=policy, purpose="evaluation"
    )
    return release


def _run(personas, model_version, *checks) -> dict[str, CheckRun]:
    """Open a release under a policy of these checks, run each check in-process."""
    release = _open(personas, model_version, _policy(personas, *(checks or (FIDELITY,))))
    for run in release.check_runs.all():
        run_check.apply(args=[str(run.pk)])
    return {run.required_check.key: run for run in CheckRun.objects.filter(release=release)}


def _stopped(run: CheckRun) -> str:
    """The run errored without any evidence; its reason."""
    assert run.status == "errored", (run.status, run.verdict, run.summary)
    assert not run.evidence.exists()
    assert run.manifest_digest == ""
    return run.error


def _next_ctime_tick(path: Path) -> None:
    """Timestamps are coarse: wait until a write to ``path`` would get a new ctime, as any
    write made after the worker hashed the file does."""
    before = path.stat().st_ctime_ns
    probe = path.with_name(".tick")
    for _ in range(1000):
        probe.write_bytes(b"")
        now = probe.stat().st_ctime_ns
        probe.unlink()
        if now > before:
            return
        time.sleep(0.005)
    raise AssertionError("the file system's clock did not move")


def _rewrite_keeping_size_and_mtime(path: Path) -> bytes:
    """What a careful insider does: new bytes, same length, modification time put back."""
    _next_ctime_tick(path)
    before, original = path.stat(), path.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    path.write_bytes(bytes(tampered))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    return original


def test_weights_rewritten_in_place_with_same_size_and_mtime_stop_the_run(
    personas, registered, long_running_worker
):
    model_version, _ = registered
    assert _run(personas, model_version)["fidelity"].status == "succeeded"  # loaded and cached
    hashed = fingerprint.digest_cache.stats["hashed"]
    assert _run(personas, model_version)["fidelity"].status == "succeeded"
    assert fingerprint.digest_cache.stats["hashed"] == hashed  # verified from memory
    _rewrite_keeping_size_and_mtime(Path(model_version.source_path) / "model.safetensors")
    reason = _stopped(_run(personas, model_version)["fidelity"])
    assert "model.safetensors (changed)" in reason
    assert f"model version {model_version}" in reason
    assert "register them as a new model version" in reason


def test_weights_replaced_by_another_models_weights_stop_the_run(personas, registered, tmp_path):
    model_version, _ = registered
    other = save_tiny_llama(tmp_path / "other", seed=1, n_layers=2) / "model.safetensors"
    target = Path(model_version.source_path) / "model.safetensors"
    assert other.stat().st_size != target.stat().st_size
    os.replace(other, target)
    (target.parent / "extra.safetensors").write_bytes(b"smuggled")
    reason = _stopped(_run(personas, model_version)["fidelity"])
    assert "extra.safetensors (unexpected), model.safetensors (changed)" in reason


def test_a_deleted_tokenizer_file_is_named_as_missing(personas, registered):
    model_version, _ = registered
    (Path(model_version.source_path) / "tokenizer_config.json").unlink()
    assert "tokenizer_config.json (missing)" in _stopped(_run(personas, model_version)["fidelity"])


def test_a_swapped_lens_file_stops_the_run_and_is_named(personas, registered, tmp_path):
    model_version, lens = registered
    other = save_random_lens(tmp_path / "other-lens", seed=5) / "sae_weights.safetensors"
    os.replace(other, Path(lens.source_path) / "sae_weights.safetensors")
    reason = _stopped(_run(personas, model_version)["fidelity"])
    assert "lens 'mid'" in reason
    assert "sae_weights.safetensors (changed)" in reason
    assert "register them as a new lens" in reason


def test_a_swapped_lens_is_refused_by_a_worker_that_never_saw_it_registered(
    personas, registered, tmp_path
):
    """A fresh worker process only has the lens's one group digest, so it cannot say which
    file changed; it still refuses, and lists the lens's files."""
    model_version, lens = registered
    fingerprint._known_groups.clear()
    _rewrite_keeping_size_and_mtime(Path(lens.source_path) / "cfg.json")
    reason = _stopped(_run(personas, model_version)["fidelity"])
    assert "lens 'mid'" in reason
    assert "cfg.json, sae_weights.safetensors" in reason


def test_weights_swapped_back_pass_again(personas, registered):
    model_version, _ = registered
    weights = Path(model_version.source_path) / "model.safetensors"
    original = _rewrite_keeping_size_and_mtime(weights)
    assert "model.safetensors (changed)" in _stopped(_run(personas, model_version)["fidelity"])
    weights.write_bytes(original)
    run = _run(personas, model_version)["fidelity"]
    assert (run.status, run.error) == ("succeeded", "")
    assert run.evidence.exists()


def test_a_cached_model_is_not_reused_after_its_files_were_swapped(
    personas, registered, long_running_worker
):
    model_version, _ = registered
    assert _run(personas, model_version)["fidelity"].status == "succeeded"
    hits = cache.stats["hits"]
    _rewrite_keeping_size_and_mtime(Path(model_version.source_path) / "model.safetensors")
    assert "model.safetensors (changed)" in _stopped(_run(personas, model_version)["fidelity"])
    assert cache.stats["hits"] == hits  # verification failed before anything was loaded


def test_weights_swapped_during_the_run_discard_its_result_and_the_retry_reverifies(
    personas, registered, monkeypatch
):
    """Swap the weights after verification, let the check load them, put them back: the
    result is discarded, the loaded model dropped, and the retry runs on the registered files."""
    model_version, _ = registered
    weights = Path(model_version.source_path) / "model.safetensors"
    real_run = sae_fidelity.run
    swaps = []

    def run_on_swapped_weights(context):
        if not swaps:
            swaps.append(_rewrite_keeping_size_and_mtime(weights))
            try:
                return real_run(context)
            finally:
                weights.write_bytes(swaps[0])
        return real_run(context)

    monkeypatch.setattr(sae_fidelity, "run", run_on_swapped_weights)
    run = _run(personas, model_version)["fidelity"]
    assert "changed while the work ran" in run.log
    assert (run.status, run.deliveries) == ("succeeded", 2)


def test_a_link_to_etc_passwd_fails_the_digest_job(personas, store):
    folder = save_tiny_llama(store / "llama")
    (folder / "tokenizer.model").symlink_to("/etc/passwd")
    model_version = _register_model(personas, folder)
    assert model_version.digest_status == "failed"
    assert f"{folder / 'tokenizer.model'} is a symbolic link to /etc/passwd" in (
        model_version.digest_error
    )
    assert model_version.file_digests == {}


def test_a_link_to_weights_outside_the_roots_fails_the_digest_job(personas, store, outside):
    folder = save_tiny_llama(store / "llama")
    shutil.move(folder / "model.safetensors", outside / "model.safetensors")
    (folder / "model.safetensors").symlink_to(outside / "model.safetensors")
    model_version = _register_model(personas, folder)
    assert model_version.digest_status == "failed"
    assert str(outside / "model.safetensors") in model_version.digest_error
    assert "outside the allowed roots" in model_version.digest_error


def test_a_linked_directory_outside_the_roots_fails_the_digest_job(personas, store, outside):
    folder = save_tiny_llama(store / "llama")
    (folder / "shards").symlink_to(outside, target_is_directory=True)
    model_version = _register_model(personas, folder)
    assert model_version.digest_status == "failed"
    assert f"{folder / 'shards'} is a symbolic link to {outside}" in model_version.digest_error


def test_a_link_added_after_registration_is_refused_by_every_check(personas, registered, outside):
    model_version, _ = registered
    (outside / "extra.safetensors").write_bytes(b"weights from elsewhere")
    link = Path(model_version.source_path) / "extra.safetensors"
    link.symlink_to(outside / "extra.safetensors")
    runs = _run(personas, model_version, FINGERPRINT, FIDELITY)
    for key in ("fingerprint", "fidelity"):
        reason = _stopped(runs[key])
        assert f"{link} is a symbolic link to {outside / 'extra.safetensors'}" in reason


def test_a_link_to_a_file_inside_the_roots_is_allowed(personas, store):
    """How a Hugging Face cache lays out a snapshot: files are links to blobs in the store."""
    folder = save_tiny_llama(store / "llama")
    blob = store / "blobs" / "weights-blob"
    blob.parent.mkdir()
    shutil.move(folder / "model.safetensors", blob)
    (folder / "model.safetensors").symlink_to(blob)
    model_version = _register_model(personas, folder)
    assert model_version.digest_status == "computed", model_version.digest_error
    assert "model.safetensors" in model_version.file_digests
    _register_lens(personas, model_version, save_random_lens(store / "lens"))
    runs = _run(personas, model_version, FINGERPRINT, FIDELITY)
    assert (runs["fingerprint"].status, runs["fingerprint"].verdict) == ("succeeded", "pass")
    assert (runs["fidelity"].status, runs["fidelity"].error) == ("succeeded", "")


def test_a_lens_with_a_link_out_of_the_roots_is_refused_at_validation(personas, store, outside):
    model_version = _register_model(personas, save_tiny_llama(store / "llama"))
    folder = save_random_lens(store / "lens")
    shutil.move(folder / "sae_weights.safetensors", outside / "sae_weights.safetensors")
    (folder / "sae_weights.safetensors").symlink_to(outside / "sae_weights.safetensors")
    lens = _register_lens(personas, model_version, folder)
    assert lens.status == "failed"
    assert f"{folder / 'sae_weights.safetensors'} is a symbolic link to {outside}" in lens.error
    assert lens.digest == ""


def test_a_lens_link_added_after_validation_is_refused_by_the_check(personas, registered, outside):
    model_version, lens = registered
    (outside / "notes.txt").write_text("anything")
    (Path(lens.source_path) / "notes.txt").symlink_to(outside / "notes.txt")
    reason = _stopped(_run(personas, model_version)["fidelity"])
    assert f"{Path(lens.source_path) / 'notes.txt'} is a symbolic link to {outside}" in reason
