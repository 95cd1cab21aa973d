"""Logs as JSON lines, each with the id of the request (or Celery task) it belongs to.

RequestIdMiddleware gives every request an id: the client's (or proxy's) `X-Request-ID` when it
is a sane token, else a new one; it is echoed in the response's `X-Request-ID` and written
into every log line emitted while the request is served, and an access line is logged per
request (logger `assay.access`). JsonFormatter writes one JSON object per line; it imports
nothing of Django, so gunicorn's master can use it for its own log too.
"""

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime

request_id: ContextVar[str | None] = ContextVar("assay_request_id", default=None)

_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("assay.access")

# Attributes every LogRecord has; anything else was passed with extra= and is written out.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _task_id() -> str | None:
    if "celery" not in sys.modules:
        return None
    from celery import current_task

    task = current_task._get_current_object() if current_task else None
    return getattr(getattr(task, "request", None), "id", None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            data["request_id"] = rid
        task = _task_id()
        if task:
            data["task_id"] = task
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        request.request_id = rid
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = rid
            self._log(request, response.status_code, started)
            return response
        finally:
            request_id.reset(token)

    @staticmethod
    def _log(request, status: int, started: float) -> None:
        from django.conf import settings

        if not settings.ASSAY_ACCESS_LOG:
            return
        user = getattr(request, "user", None)
        access_log.info(
            "%s %s %s",
            request.method,
            request.path,
            status,
            extra={
                "request_id": getattr(request, "request_id", None),
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "user": user.get_username() if user is not None and user.is_authenticated else None,
            },
        )
