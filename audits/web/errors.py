"""Errors a person meets in the UI: pages that say what went wrong and what to do, never a
traceback or raw JSON. API paths keep their JSON answers (config.urls routes both here).
"""

import logging
from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from audits.checkkinds import CheckSpecError
from audits.errors import ActionError, ConflictError, ForbiddenError
from audits.ledger import LedgerIntegrityError
from audits.models import EvidenceIntegrityError
from audits.signing import SignatureError

logger = logging.getLogger(__name__)

MACHINE_PREFIXES = ("/api/",)

PAGES = {
    400: ("The request could not be read", "Go back, check what you entered and try again."),
    403: ("You may not do this", "If you think you should, ask an Assay admin."),
    404: ("Nothing here", "The address may be mistyped, or the record does not exist."),
    500: (
        "Something went wrong on the server",
        "The incident was logged. Try again in a moment; if it keeps happening, tell an admin.",
    ),
}
API_DETAILS = {
    400: "bad request",
    403: "forbidden",
    404: "not found",
    500: "internal error; the incident was logged",
}


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return request.path.startswith(MACHINE_PREFIXES) or (
        "application/json" in accept and "text/html" not in accept
    )


def error_page(request: HttpRequest, status: int, detail: str = "") -> HttpResponse:
    if wants_json(request):
        return JsonResponse({"detail": detail or API_DETAILS[status]}, status=status)
    title, advice = PAGES[status]
    return render(
        request,
        "web/error.html",
        {"status": status, "title": title, "advice": advice, "detail": detail},
        status=status,
    )


def handler(status: int) -> Callable:
    """config.urls' handler400/403/404/500."""

    def view(request, exception=None):
        detail = ""
        if status == 403 and isinstance(exception, PermissionDenied) and exception.args:
            detail = str(exception.args[0])
        return error_page(request, status, detail)

    return view


# Errors an action raises for a person to read (their messages say what to do).
ACTION_ERRORS = (
    ActionError,
    CheckSpecError,
    SignatureError,
    DjangoValidationError,
    EvidenceIntegrityError,
    LedgerIntegrityError,
)


def message_of(exc: Exception) -> str:
    if isinstance(exc, DjangoValidationError):
        return "; ".join(exc.messages)
    if isinstance(exc, IntegrityError):
        return "the request conflicts with an existing record; reload the page and retry"
    return str(exc)


def status_of(exc: Exception) -> int:
    if isinstance(exc, ForbiddenError):
        return 403
    if isinstance(exc, ConflictError | EvidenceIntegrityError | LedgerIntegrityError):
        return 409
    if isinstance(exc, IntegrityError):
        return 409
    return 400


def back_to(request: HttpRequest, fallback: str) -> str:
    """Where a form goes after it was handled: its `next` field if it is on this site."""
    target = request.POST.get("next") or fallback
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return fallback


def form_action(view: Callable) -> Callable:
    """A POST view that calls an action: an error the action raises becomes a message on the
    page the person came from, never an error page."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except (*ACTION_ERRORS, IntegrityError) as exc:
            if isinstance(exc, IntegrityError):
                logger.warning("integrity error in %s: %s", request.path, exc)
            messages.error(request, message_of(exc))
            return redirect(back_to(request, request.path))

    return wrapped


def json_action(view: Callable) -> Callable:
    """A POST view that the page's script calls: errors answer {"detail": words} with the
    status, which the script shows as a sentence."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except PermissionDenied as exc:
            detail = str(exc.args[0]) if exc.args else "you may not do this"
            return JsonResponse({"detail": detail}, status=403)
        except (*ACTION_ERRORS, IntegrityError) as exc:
            return JsonResponse({"detail": message_of(exc)}, status=status_of(exc))

    return wrapped


def locked_out(request, credentials=None, *args, **kwargs):
    """django-axes' answer to a locked-out login: a page for people, JSON for machines.

    Point AXES_LOCKOUT_CALLABLE here so that the web login shows a page instead of JSON."""
    from audits.api.auth import locked_out as api_locked_out

    if wants_json(request):
        return api_locked_out(request, credentials, *args, **kwargs)
    return render(
        request,
        "web/locked_out.html",
        {"hours": _lockout_hours()},
        status=429,
    )


def _lockout_hours() -> int:
    from django.conf import settings

    return int(getattr(settings, "AXES_COOLOFF_TIME", 1) or 1)


def csrf_failure(request, reason: str = "", template_name: str = "") -> HttpResponse:
    """A refused form (a missing or stale CSRF token), said in words.

    Point CSRF_FAILURE_VIEW here so that a stale form shows this page instead of Django's."""
    return error_page(
        request,
        403,
        "the form was refused because its security token is missing or out of date; reload the "
        "page and submit it again",
    )
