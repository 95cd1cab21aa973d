from django.conf import settings
from django.http import JsonResponse


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
