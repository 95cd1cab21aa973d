#!/bin/sh
# Assay's container entrypoint: one role per container.
#
#   web       gunicorn serving config.wsgi (docker/gunicorn.conf.py)
#   worker    a Celery worker on $ASSAY_WORKER_QUEUES (default cpu), $ASSAY_WORKER_CONCURRENCY
#   beat      Celery beat (exactly one per deployment): reconciler, checkpoints, webhook sweep
#   migrate   apply database migrations, then exit (run before web, workers and beat start)
#   manage …  any manage.py command (verify_ledger, grant_role, createsuperuser, …)
#
# tests/integration/test_production_processes.py starts exactly these commands (outside a
# container, with ASSAY_PYTHON pointing at the test's interpreter).
set -eu

# Secrets from files (Docker or Kubernetes secrets): NAME_FILE=/run/secrets/x sets NAME.
for name in ASSAY_SECRET_KEY DATABASE_URL CELERY_BROKER_URL ASSAY_METRICS_TOKEN ASSAY_WEBHOOK_KEYS
do
  eval "file=\${${name}_FILE:-}"
  [ -n "$file" ] || continue
  eval "given=\${${name}:-}"
  if [ -n "$given" ]; then
    echo "entrypoint: set $name or ${name}_FILE, not both" >&2
    exit 64
  fi
  if [ ! -r "$file" ]; then
    echo "entrypoint: ${name}_FILE=$file is not readable" >&2
    exit 66
  fi
  value=$(cat "$file")
  export "$name=$value"
  unset "${name}_FILE"
done

here=$(dirname "$0")
python=${ASSAY_PYTHON:-python}
role=${1:-web}
[ $# -gt 0 ] && shift

case "$role" in
  web)
    exec "$python" -m gunicorn --config "$here/gunicorn.conf.py" config.wsgi:application "$@"
    ;;
  worker)
    exec "$python" -m celery -A config worker \
      -Q "${ASSAY_WORKER_QUEUES:-cpu}" \
      --concurrency="${ASSAY_WORKER_CONCURRENCY:-1}" \
      -n "${ASSAY_WORKER_NAME:-worker}@%h" \
      --without-gossip --without-mingle \
      --loglevel="${ASSAY_LOG_LEVEL:-INFO}" "$@"
    ;;
  beat)
    exec "$python" -m celery -A config beat \
      --schedule "${ASSAY_BEAT_SCHEDULE:-${ASSAY_VAR_DIR:-/var/lib/assay}/celerybeat-schedule}" \
      --loglevel="${ASSAY_LOG_LEVEL:-INFO}" "$@"
    ;;
  migrate)
    exec "$python" manage.py migrate --noinput "$@"
    ;;
  manage)
    exec "$python" manage.py "$@"
    ;;
  *)
    echo "entrypoint: unknown role '$role' (web, worker, beat, migrate, manage)" >&2
    exit 64
    ;;
esac
