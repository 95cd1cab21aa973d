"""The model and lenses a check reads, resolved from its context and loaded through the
engine's bounded cache (so a worker loads a model once for many checks).

Cached entries are keyed by the registered digests the references carry, never by path alone:
the worker verifies the files against those digests before a check runs
(interp_jobs.worker.binding), so a cached model is always the registered one.
"""

from interp_jobs.checks.base import CheckContext, CheckParameterError, LensRef, ModelRef
from interp_jobs.engine.loading import cache
from interp_jobs.engine.loading.fingerprint import group_digest


def model_cache_digest(ref: ModelRef) -> str:
    """The content a model reference names: its weights digest and, because the tokenizer and
    config are loaded too, the digest over all its files; "" when nothing was recorded."""
    if not ref.weights_digest and not ref.file_digests:
        return ""
    return f"{ref.weights_digest}:{group_digest(ref.file_digests)}"


def load_model_for(context: CheckContext, ref: ModelRef | None = None):
    ref = ref or context.model
    return cache.model(
        ref.path,
        ref.format,
        device=context.device,
        dtype=context.dtype,
        digest=model_cache_digest(ref),
    )


def lens_ref(context: CheckContext, name: str | None = None) -> LensRef:
    if not context.lenses:
        raise CheckParameterError("this check needs a lens, and none is registered for the model")
    if name is None:
        return context.lenses[0]
    for ref in context.lenses:
        if ref.name == name:
            return ref
    known = ", ".join(ref.name for ref in context.lenses)
    raise CheckParameterError(f"no lens named {name!r} for this model; known lenses: {known}")


def load_lens_for(context: CheckContext, name: str | None = None, loaded=None):
    """The lens (checked against the model it will read) and its reference."""
    from interp_jobs.engine.loading.lenses import check_lens_fits

    ref = lens_ref(context, name)
    lens = cache.lens(ref.path, device=context.device, dtype=context.dtype, digest=ref.digest)
    check_lens_fits(lens, loaded or load_model_for(context))
    return lens, ref
