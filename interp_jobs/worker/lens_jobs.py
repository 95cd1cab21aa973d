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
from interp_jobs.engine.loading.fingerprint import Snapshot, lens_files, measure, remember_group
from interp_jobs.worker import binding


def measure_lens(path: Path) -> tuple[str, Snapshot]:
    """sha256 over the lens directory's files, in the same sha256sum form as model digests,
    and the snapshot it was measured under; a link leading out of ASSAY_LENS_ROOTS is refused."""
    digests, snapshot = measure(lens_files(path, settings.ASSAY_LENS_ROOTS))
    return remember_group(digests), snapshot


def lens_digest(path: Path) -> str:
    return measure_lens(path)[0]


def model_ref(model_version) -> ModelRef:
    return ModelRef(
        path=model_version.source_path,
        format=model_version.format,
        weights_digest=model_version.weights_digest,
        file_digests=dict(model_version.file_digests),
        name=str(model_version),
    )


def inspect_lens(lens: Lens) -> LensFacts:
    """Load the lens and its model (through the worker's cache) and check they fit.

    The lens is digested before it is loaded, and the facts are only recorded if its files
    did not move meanwhile, so the recorded digest is the digest of the lens that was checked.
    """
    from interp_jobs.engine.loading.lenses import lens_info

    digest, snapshot = measure_lens(Path(lens.source_path))
    context = replace(_context(lens), lenses=(LensRef(path=lens.source_path, name=lens.name),))
    with binding.unchanged(snapshot | _verified_model(context)):
        loaded_lens, _ = inputs.load_lens_for(context)
    info = lens_info(loaded_lens)
    return LensFacts(
        hook_name=info["hook_name"],
        architecture=info["architecture"],
        d_in=int(info["d_in"]),
        d_sae=int(info["d_sae"]),
        digest=digest,
    )


def _verified_model(context: CheckContext) -> Snapshot:
    """A model version whose digests are not computed yet is loaded unverified, under its path
    alone in the cache (never under a digest key, which only verified files may fill)."""
    return binding.verify_model(context.model) if context.model.file_digests else {}


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
    context = _context(lens)
    with binding.unchanged(_verified_model(context)):
        loaded = inputs.load_model_for(context)
    train_lens(
        loaded,
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
