"""The microscope: load models and lenses from local disk, read and edit activations.

Pure torch + transformers + sae_lens; imports no Django. Nothing heavy is imported here
because the web process imports ``interp_jobs`` and must start fast: torch, transformers
and sae_lens are imported inside the modules that need them (``models``, ``hooks``,
``lenses``), so ``import interp_jobs.engine.errors`` stays cheap.
"""
