from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from audits.web import errors

# The docs page loads its initialiser as a script file (not inline), so the content security
# policy can forbid inline script; it and the schema are for signed-in people only.
docs = SpectacularSwaggerSplitView.as_view(url_name="schema")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("audits.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", login_required(docs, login_url="/admin/login/"), name="swagger-ui"),
    # Operations: /healthz, /readyz, /metrics and the webhooks' API (audits/operations).
    path("", include("audits.operations.urls")),
    # The governance UI: /, /login/, /logout/, /models/, /releases/<id>/, /check-runs/<id>/,
    # /catalog/, /policies/, /keys/, /ledger/ (audits/web).
    path("", include("audits.web.urls")),
]

# Errors: a page for people, JSON under /api/ (and for clients that ask only for JSON).
handler400 = errors.handler(400)
handler403 = errors.handler(403)
handler404 = errors.handler(404)
handler500 = errors.handler(500)
