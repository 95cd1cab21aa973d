"""weights_fingerprint as a library: same files, same evidence; a changed file is named."""

from interp_jobs.checks import weights_fingerprint
from interp_jobs.checks.base import ModelRef
from interp_jobs.engine.loading.fingerprint import fingerprint_model


def _context(make_context, model_dir):
    recorded = fingerprint_model(model_dir, "hf_dir")
    model = ModelRef(
        path=str(model_dir),
        format="hf_dir",
        weights_digest=recorded.weights_digest,
        file_digests=recorded.files,
        name="tiny@1",
    )
    return make_context(weights_fingerprint, model=model)


def test_same_files_give_byte_identical_evidence(make_context, tiny_model_dir):
    context = _context(make_context, tiny_model_dir)
    first, second = weights_fingerprint.run(context), weights_fingerprint.run(context)
    assert first.verdict == "pass"
    assert [a.data for a in first.artifacts] == [a.data for a in second.artifacts]


def test_a_changed_weights_file_fails_and_is_named(make_context, tiny_model_dir, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    context = _context(make_context, copy)
    (copy / "model.safetensors").write_bytes(b"other weights")
    result = weights_fingerprint.run(context)
    assert result.verdict == "fail"
    assert result.metrics["mismatched_files"] == ["model.safetensors"]
