# Assay's worker image: the microscope (torch, transformers, sae_lens) and the Celery worker that
# runs checks, digests, lens jobs and dossier exports (WeasyPrint, hence Pango and fonts).
# Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t assay-worker .
# TORCH_INDEX_URL picks torch's build: empty is pip's default index (a CUDA build on x86-64
# Linux, for GPU workers); set it to PyTorch's CPU wheel index for a much smaller CPU image.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app

ARG TORCH_INDEX_URL=
COPY pyproject.toml docker/requirements.py /tmp/build/
# torch first, pinned as pyproject.toml pins it, from the chosen index; then the rest; then
# what the Makefile installs with --no-deps (circuit-tracer pins transformers and
# huggingface-hub below ours yet runs under them; pyproject.toml lists its imports).
RUN python /tmp/build/requirements.py torch > /tmp/build/torch.txt \
    && python /tmp/build/requirements.py worker > /tmp/build/worker.txt \
    && pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} -r /tmp/build/torch.txt \
    && pip install -r /tmp/build/worker.txt \
    && pip install --no-deps circuit-tracer==0.5.0 \
    && rm -rf /tmp/build

COPY manage.py pyproject.toml ./
COPY config ./config
COPY audits ./audits
COPY interp_jobs ./interp_jobs
COPY demo ./demo
COPY templates ./templates
COPY static ./static
COPY tools ./tools
COPY docker/entrypoint.sh docker/gunicorn.conf.py docker/healthcheck.py ./docker/

ENV PYTHONPATH=/app ASSAY_VAR_DIR=/var/lib/assay ASSAY_STATIC_ROOT=/app/staticfiles \
    ASSAY_LOG_FORMAT=json HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN useradd --system --uid 10001 --home-dir /var/lib/assay --create-home assay \
    && mkdir -p /var/lib/assay/keys /srv/evidence /srv/checkpoints /models \
    && chown -R assay /var/lib/assay /srv \
    && mkdir -p /app/staticfiles
USER assay
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["worker"]
