"""Validating a registered lens against the model version it claims to read, and training
requested lenses."""

import json
from dataclasses import replace
from pathlib import Path

from django.conf import settings

from audits.actions import LensFacts
from audits.models import Lens
from interp_jobs.checks import inputs
from interp_jobs.checks.base import CheckContext, LensRef, ModelRef, Spec
from interp_jobs.engine.loading.fingerprint import group_digest, hash_files


def lens_digest(path: Path) -> str:
    """sha256 over the lens directory's files, in the same sha256sum form as model digests."""
    files = {
        item.relative_to(path).as_posix(): item
        for item in sorted(path.rglob("*"))
        if item.is_file() and not item.name.startswith(".")
    }
    return group_digest(hash_files(files))


def model_ref(model_version) -> ModelRef:
    return ModelRef(
        path=model_version.source_path,
        format=model_version.format,
        weights_digest=model_version.weights_digest,
        file_digests=dict(model_version.file_digests),
        name=str(model_version),
    )


def inspect_lens(lens: Lens) -> LensFacts:
    """Load the lens and its model (through the worker's cache) and check they fit."""
    from interp_jobs.engine.loading.lenses import lens_info

    context = replace(_context(lens), lenses=(LensRef(path=lens.source_path, name=lens.name),))
    loaded_lens, _ = inputs.load_lens_for(context)
    info = lens_info(loaded_lens)
    return LensFacts(
        hook_name=info["hook_name"],
        architecture=info["architecture"],
        d_in=int(info["d_in"]),
        d_sae=int(info["d_sae"]),
        digest=lens_digest(Path(lens.source_path)),
    )


TRAINING_SETTINGS = ("seq_len", "batch_tokens", "buffer_batches", "eval_sequences", "lr")


def _context(lens: Lens) -> CheckContext:
    return CheckContext(
        model=model_ref(lens.model_version),
        parameters=Spec(),
        thresholds=Spec(),
        device=settings.ASSAY_DEVICE,
        dtype=settings.ASSAY_DTYPE,
    )


def train(lens: Lens) -> dict:
    """Train the requested lens into its directory; return the training record."""
    from interp_jobs.engine.loading.corpus import load_corpus
    from interp_jobs.engine.training import TrainingSettings, train_lens

    request = lens.training["request"]
    overrides = {k: request[k] for k in TRAINING_SETTINGS if k in request}
    out = Path(lens.source_path)
    out.mkdir(parents=True, exist_ok=True)
    train_lens(
        inputs.load_model_for(_context(lens)),
        hook_name=request["hook_name"],
        d_sae=request["d_sae"],
        architecture=request["architecture"],
        corpus=load_corpus(),
        n_tokens=request["n_tokens"],
        seed=request["seed"],
        out_dir=out,
        settings=TrainingSettings(**overrides),
        model_info={
            "model_version": str(lens.model_version_id),
            "weights_digest": lens.model_version.weights_digest,
        },
    )
    return {"request": request, **json.loads((out / "training.json").read_text())}
