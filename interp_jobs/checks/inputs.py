"""The model and lenses a check reads, resolved from its context and loaded through the
engine's bounded cache (so a worker loads a model once for many checks)."""

from interp_jobs.checks.base import CheckContext, CheckParameterError, LensRef, ModelRef
from interp_jobs.engine.loading import cache


def load_model_for(context: CheckContext, ref: ModelRef | None = None):
    ref = ref or context.model
    return cache.model(ref.path, ref.format, device=context.device, dtype=context.dtype)


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
    lens = cache.lens(ref.path, device=context.device, dtype=context.dtype)
    check_lens_fits(lens, loaded or load_model_for(context))
    return lens, ref
