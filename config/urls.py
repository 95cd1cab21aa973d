from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

# The docs page loads its initialiser as a script file (not inline), so the content security
# policy can forbid inline script; it and the schema are for signed-in people only.
docs = SpectacularSwaggerSplitView.as_view(url_name="schema")

urlpatterns = [
    path("", TemplateView.as_view(template_name="landing.html"), name="landing"),
    path("", include("audits.operations.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("audits.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", login_required(docs, login_url="/admin/login/"), name="swagger-ui"),
]


def _json_error(status: int, detail: str):
    def view(request, exception=None):
        return JsonResponse({"detail": detail}, status=status)

    return view


handler400 = _json_error(400, "bad request")
handler403 = _json_error(403, "forbidden")
handler404 = _json_error(404, "not found")
handler500 = _json_error(500, "internal error; the incident was logged")
