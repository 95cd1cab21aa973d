from django.conf import settings
from django.http import JsonResponse

from audits import current_actor, safe_json


class RequestBodyLimitMiddleware:
    """Refuses oversized request bodies with 413 before any view or parser reads them.

    DRF's parsers read the request stream directly, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE alone
    does not protect API views.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = settings.ASSAY_MAX_REQUEST_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Content-Length is not a number"}, status=400)
        if length > limit:
            return JsonResponse(
                {
                    "detail": f"request body is {length} bytes; the limit is {limit} bytes "
                    "(ASSAY_MAX_REQUEST_BYTES)"
                },
                status=413,
            )
        return self.get_response(request)


class MalformedRequestMiddleware:
    """Refuses a query string or path that no view could store or answer safely (NUL
    characters, lone surrogates) with 400, before the database sees it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        try:
            safe_json.check_text(request.path, "the path")
            for key, values in request.GET.lists():
                safe_json.check_text(key, "a query parameter name")
                for value in values:
                    safe_json.check_text(value, f"query parameter {key!r}")
        except safe_json.UnsafeJSONError as exc:
            return JsonResponse({"detail": str(exc)}, status=400)
        return self.get_response(request)


class ActorMiddleware:
    """Makes the request's user the actor of account changes made while it is served."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with current_actor.acting_as(lambda: getattr(request, "user", None)):
            return self.get_response(request)
