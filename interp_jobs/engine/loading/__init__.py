"""Loading from local disk: models (Hugging Face directory, GGUF), lenses and transcoders,
corpora, file digests, model export, and the bounded cache of loaded models and lenses."""
