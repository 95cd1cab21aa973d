"""Signing keys: register one made in this browser (proof of possession, by the page's script
through the API), revoke one, and see everyone's public keys."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from audits import actions
from audits.models import ReviewerKey
from audits.roles import Role, has_role
from audits.web.access import REVIEWERS, reader_required, require, signed_in
from audits.web.errors import form_action
from audits.web.pages import render_page


@reader_required
def key_list(request: HttpRequest) -> HttpResponse:
    user = signed_in(request)
    mine = ReviewerKey.objects.filter(user=user).order_by("-registered_at")
    others = (
        ReviewerKey.objects.exclude(user=user)
        .select_related("user")
        .order_by("user__username", "-registered_at")
    )
    may_register = has_role(user, *REVIEWERS)
    return render_page(
        request,
        "web/keys.html",
        {
            "mine": mine,
            "others": others,
            "may_register": may_register,
            "may_revoke_any": has_role(user, Role.ADMIN),
            "config": {
                "username": user.get_username(),
                "challenge_url": "/api/v1/reviewer-keys/challenge/",
                "register_url": "/api/v1/reviewer-keys/",
                "registered": [k.key_id for k in mine if k.revoked_at is None],
            },
        },
        section="keys",
    )


@require_POST
@reader_required
@form_action
def revoke(request: HttpRequest, key_id: str) -> HttpResponse:
    key = get_object_or_404(ReviewerKey, pk=key_id)
    require(request.user, REVIEWERS, "revoking a signing key")
    actions.revoke_reviewer_key(actor=request.user, key=key)
    messages.success(
        request,
        f"Key {key.key_id[:16]}… is revoked: every approval it signed stopped counting. "
        "Sign again with a new key where you still approve.",
    )
    return redirect("/keys/")
