"""Signing in and out of the UI. Logins go through django-axes (failed attempts lock a
username and an address, as for the API)."""

from django.conf import settings
from django.contrib.auth import logout
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from audits.web.pages import render_page, viewer


class Login(LoginView):
    template_name = "web/login.html"
    redirect_authenticated_user = True

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(me=None, nav=[], section="login", failure_limit=settings.AXES_FAILURE_LIMIT)
        return context


@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks (a page without script can still sign out); POST signs out."""
    if request.method == "POST":
        logout(request)
        return redirect("/login/")
    if not request.user.is_authenticated:
        return redirect("/login/")
    return render_page(request, "web/logout.html", {"who": viewer(request.user)})
