"""Rendering a page: the template, plus who is signed in and what the navigation offers."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audits.roles import Role, has_role, roles_of

NAV = (
    ("dashboard", "/", "Dashboard"),
    ("models", "/models/", "Models"),
    ("catalog", "/catalog/", "Catalog"),
    ("policies", "/policies/", "Policies"),
    ("keys", "/keys/", "Keys"),
    ("ledger", "/ledger/", "Ledger"),
)


def viewer(user) -> dict:
    roles = roles_of(user)
    return {
        "username": user.get_username(),
        "name": user.get_full_name() or user.get_username(),
        "roles": sorted(roles),
        "is_admin": has_role(user, Role.ADMIN),
        "is_reviewer": has_role(user, Role.REVIEWER, Role.ADMIN),
        "is_submitter": has_role(user, Role.SUBMITTER, Role.ADMIN),
        "is_auditor": Role.AUDITOR.value in roles,
    }


def render_page(
    request: HttpRequest, template: str, context: dict, *, section: str = "", status: int = 200
) -> HttpResponse:
    me = viewer(request.user) if request.user.is_authenticated else None
    nav = [
        {"url": url, "label": label, "current": key == section}
        for key, url, label in NAV
        if me is not None
    ]
    return render(
        request, template, {"me": me, "nav": nav, "section": section, **context}, status=status
    )
