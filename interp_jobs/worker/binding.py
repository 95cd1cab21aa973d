"""Binding what a worker reads to what was registered.

Evidence is signed as evidence about a registered model version and its lenses, so before a
check reads them the worker compares their files with the digests recorded at registration
(through the engine's stat cache, so an unchanged file is not read again), refuses symbolic
links that lead out of the allowed roots, and after the check makes sure that none of the
verified files moved while it ran: a swap between verification and loading would otherwise
put other weights into the result (and into the cache of loaded models).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from interp_jobs.checks.base import CheckContext, LensRef, ModelRef
from interp_jobs.engine.errors import EngineError
from interp_jobs.engine.loading import cache
from interp_jobs.engine.loading.fingerprint import (
    Snapshot,
    changed_since,
    model_files,
    verify_lens_files,
    verify_model_files,
)


def verify_model(ref: ModelRef) -> Snapshot:
    return verify_model_files(
        Path(ref.path),
        ref.format,
        ref.file_digests,
        roots=settings.ASSAY_MODEL_ROOTS,
        what=f"model version {ref.name}" if ref.name else "",
    )


def verify_lens(ref: LensRef) -> Snapshot:
    return verify_lens_files(
        Path(ref.path), ref.digest, roots=settings.ASSAY_LENS_ROOTS, what=f"lens {ref.name!r}"
    )


def refuse_escaping_links(ref: ModelRef) -> None:
    """Only the roots rule, for a check that hashes every file itself (weights_fingerprint)."""
    model_files(Path(ref.path), ref.format, settings.ASSAY_MODEL_ROOTS)


def verify_context(context: CheckContext) -> Snapshot:
    """Verify the model, its baseline (when it has digests) and every lens of the context."""
    snapshot = verify_model(context.model)
    baseline = context.baseline_model
    if baseline is not None and baseline.file_digests:
        snapshot |= verify_model(baseline)
    elif baseline is not None:
        # A parent whose digest job failed has nothing to bind to; only version_drift reads it.
        context.log(f"the baseline model {baseline.name} has no recorded digests: not verified")
    for ref in context.lenses:
        snapshot |= verify_lens(ref)
    return snapshot


@contextmanager
def unchanged(snapshot: Snapshot) -> Iterator[None]:
    """Run the body, then refuse its result if any verified file moved meanwhile."""
    try:
        yield
    except BaseException:
        if changed_since(snapshot):
            cache.clear_cache()  # an entry loaded meanwhile may hold other bytes
        raise
    changed = changed_since(snapshot)
    if changed:
        cache.clear_cache()
        # Transient: the retry verifies the files afresh, and fails for good if they are no
        # longer the registered ones.
        raise EngineError(
            f"{', '.join(changed)} changed while the work ran, after it had been verified; "
            "its result is discarded and it will run again on files verified afresh"
        )
