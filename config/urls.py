from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("audits.api.urls")),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]


def _json_error(status: int, detail: str):
    def view(request, exception=None):
        return JsonResponse({"detail": detail}, status=status)

    return view


handler400 = _json_error(400, "bad request")
handler403 = _json_error(403, "forbidden")
handler404 = _json_error(404, "not found")
handler500 = _json_error(500, "internal error; the incident was logged")
