"""gunicorn settings of the web role (docker/entrypoint.sh web); every value from the environment.

Sync workers by default: Assay's views are short database reads and writes, and a request
never waits on a worker (checks run in Celery). ASSAY_WEB_THREADS > 1 switches to gthread.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("ASSAY_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("ASSAY_WEB_WORKERS") or multiprocessing.cpu_count() * 2 + 1)
threads = int(os.environ.get("ASSAY_WEB_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("ASSAY_WEB_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("ASSAY_WEB_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# Recycle workers now and then: a slow leak in any library cannot grow without bound.
max_requests = 5000
max_requests_jitter = 500
# Heartbeat files on tmpfs: a container's overlay filesystem can stall them.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108
# The application logs one access line per request, with its request id (assay.access).
accesslog = None
errorlog = "-"
loglevel = os.environ.get("ASSAY_LOG_LEVEL", "INFO").lower()
# Only the proxy in front may say the request came over https (ASSAY_BEHIND_PROXY too).
forwarded_allow_ips = os.environ.get("ASSAY_FORWARDED_ALLOW_IPS", "127.0.0.1")

if os.environ.get("ASSAY_LOG_FORMAT") == "json":
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "audits.operations.logs.JsonFormatter"}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "gunicorn.error": {
                "level": loglevel.upper(),
                "handlers": ["console"],
                "propagate": False,
            }
        },
    }

# Prometheus: several worker processes share one view of the metrics through files in this
# folder (prometheus_client's multiprocess mode); it must be set before a worker imports
# prometheus_client, and emptied when the server starts.
os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "assay-prometheus")
)
# Imported here, once, and not inside child_exit: gunicorn calls child_exit from its SIGCHLD
# handler, and a second worker exiting while the first call's import is still running
# re-enters the import ("cannot import name ... partially initialized module").
from prometheus_client import multiprocess  # noqa: E402


def on_starting(server):
    folder = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
