# Assay's web image: gunicorn serving the API, the UI and the admin, and the light Celery roles
# (beat, the ops worker: webhooks, reconciler, checkpoints). No torch: the web process never
# imports it (tests/operations/test_web_without_torch.py). Build from the repository root:
#   docker build -f docker/web.Dockerfile -t assay-web .
# (docker/compose.yaml does this; docs/operations.md says how to run it.)
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml): everything but torch's stack.
COPY pyproject.toml docker/requirements.py /tmp/build/
RUN python /tmp/build/requirements.py web > /tmp/build/web.txt \
    && pip install -r /tmp/build/web.txt \
    && rm -rf /tmp/build

# The code runs from /app (not installed): templates, static files and shipped data stay beside it.
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
    ASSAY_LOG_FORMAT=json HF_HUB_OFFLINE=1
# Static files collected into the image (not the data volume, which would keep stale copies).
RUN ASSAY_SECRET_KEY=collectstatic-only ASSAY_VAR_DIR=/tmp/collect \
        python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/collect \
    && useradd --system --uid 10001 --home-dir /var/lib/assay --create-home assay \
    && mkdir -p /var/lib/assay/keys /srv/evidence /srv/checkpoints /models \
    && chown -R assay /var/lib/assay /srv

USER assay
EXPOSE 8000
# No HEALTHCHECK here: beat and the ops worker run from this image too; compose gives each
# role its own (web: docker/healthcheck.py, workers: celery inspect ping).
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]
