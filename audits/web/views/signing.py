"""Signing a decision in the browser.

The page shows what will be signed; the browser's script fetches the statement
(GET /api/v1/releases/<id>/statement/), fills in the rationale, conditions, printed name, key
id and time exactly as tools/assay_review.py does, canonicalises it (RFC 8785), signs its DSSE
PAE with the reviewer's non-extractable Ed25519 key (WebCrypto, kept in IndexedDB) and sends
the envelope here. Before that the reviewer enters their password again: `reauth` checks it
(through django-axes, so guessing locks the account as a login would) and hands out a nonce
that is good for one signature on this release within five minutes; `submit` takes the
envelope only with that nonce and records it with audits.actions.record_decision, which
verifies the signature, the key's owner, the four-eyes rules and the current evidence.
"""

import hmac
import secrets
import time

from django.contrib.auth import authenticate
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from django.views.decorators.http import require_POST

from audits import actions, gate, queries, safe_json, statements
from audits.canonical import canonical_json
from audits.models import Decision, Release, ReviewerKey
from audits.web import figures
from audits.web.access import reader_required, release_abilities, signed_in
from audits.web.errors import json_action
from audits.web.pages import render_page

REAUTH_SESSION_KEY = "assay.sign.reauth"
REAUTH_SECONDS = 300
MAX_BODY = 200_000

MEANING_TEXT = (
    "Your signature is the electronic signature 21 CFR 11.50 describes: the signed record "
    "carries your printed name, the date and time of signing, and the meaning of the "
    "signature (approval, rejection or waiver, in the words below). It binds you to exactly "
    "this evidence: the model's weights digest, the policy's digest and every check run's "
    "evidence manifest. If the evidence changes (a check is run again), an approval stops "
    "counting and you must review and sign again."
)


def _release(pk) -> Release:
    return get_object_or_404(
        Release.objects.select_related("model_version", "policy", "submitter"), pk=pk
    )


def _chosen(request: HttpRequest, release: Release) -> tuple[str, str, list[str]]:
    blocking = sorted(
        run.required_check.key
        for run in queries.counting_runs(release)
        if run.required_check.blocking
    )
    decision = request.GET.get("decision", Decision.Type.APPROVE)
    if decision not in Decision.Type.values:
        decision = Decision.Type.APPROVE
    check = request.GET.get("check", "")
    if decision == Decision.Type.WAIVE and check not in blocking:
        check = blocking[0] if blocking else ""
    return decision, (check if decision == Decision.Type.WAIVE else ""), blocking


@reader_required
def sign_page(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    abilities = release_abilities(request.user, release)
    if not abilities.sign:
        raise PermissionDenied(
            f"You cannot sign a decision on this release: {abilities.why_not_sign}."
        )
    decision, check, blocking = _chosen(request, release)
    user = signed_in(request)
    name = user.get_full_name() or user.get_username()
    preview = statements.build(
        release,
        decision=decision,
        check=check,
        rationale="(your rationale)",
        signer_username=user.get_username(),
        signer_name=name,
        key_id="(your key id)",
        signed_at=timezone.now(),
    )
    answer = gate.evaluate(queries.gate_facts(release))
    keys = list(ReviewerKey.objects.filter(user=user, revoked_at__isnull=True))
    return render_page(
        request,
        "web/sign.html",
        {
            "release": release,
            "decision": decision,
            "check": check,
            "blocking": blocking,
            "meanings": statements.MEANINGS,
            "meaning": statements.MEANINGS[decision],
            "preview_lines": statements.summary_lines(preview),
            "preview_json": canonical_json(preview).decode("utf-8"),
            "meaning_text": MEANING_TEXT,
            "answer": answer,
            "state_label": figures.STATES.get(answer.state, (answer.state, ""))[0],
            "keys": keys,
            "config": {
                "release": str(release.pk),
                "username": user.get_username(),
                "name": name,
                "keys": [key.key_id for key in keys],
                "statement_url": f"/api/v1/releases/{release.pk}/statement/",
                "reauth_url": f"/releases/{release.pk}/sign/reauth/",
                "submit_url": f"/releases/{release.pk}/sign/submit/",
                "release_url": f"/releases/{release.pk}/",
                "checking": answer.state == gate.CHECKING,
            },
        },
        section="dashboard",
    )


def _body(request: HttpRequest) -> dict:
    if len(request.body) > MAX_BODY:
        raise actions.ActionError("the request is too large")
    try:
        data = safe_json.loads(request.body.decode("utf-8"), what="the request")
    except (safe_json.UnsafeJSONError, UnicodeDecodeError) as exc:
        raise actions.ActionError(str(exc)) from None
    if not isinstance(data, dict):
        raise actions.ActionError("the request must be a JSON object")
    return data


def _may_sign(request: HttpRequest, release: Release) -> None:
    abilities = release_abilities(request.user, release)
    if not abilities.sign:
        raise PermissionDenied(
            f"you cannot sign a decision on this release: {abilities.why_not_sign}"
        )


@require_POST
@reader_required
@json_action
def reauth(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    _may_sign(request, release)
    password = _body(request).get("password")
    if not isinstance(password, str) or not password:
        raise actions.ActionError("enter your password to sign")
    user = authenticate(request, username=request.user.get_username(), password=password)
    if user is None or user.pk != request.user.pk:
        return JsonResponse({"detail": "that is not your password; nothing was signed"}, status=403)
    nonce = secrets.token_urlsafe(32)
    request.session[REAUTH_SESSION_KEY] = {
        "nonce": nonce,
        "release": str(release.pk),
        "expires": time.time() + REAUTH_SECONDS,
    }
    return JsonResponse({"nonce": nonce, "expires_in": REAUTH_SECONDS})


def _take_nonce(request: HttpRequest, release: Release, nonce) -> None:
    """The re-authentication is good for one signature on this release, for five minutes."""
    held = request.session.pop(REAUTH_SESSION_KEY, None)
    valid = (
        isinstance(held, dict)
        and isinstance(nonce, str)
        and hmac.compare_digest(str(held.get("nonce", "")), nonce)
        and held.get("release") == str(release.pk)
        and float(held.get("expires", 0)) >= time.time()
    )
    if not valid:
        raise PermissionDenied(
            "enter your password again just before signing (it is good for one signature on "
            "this release, for five minutes)"
        )


@require_POST
@reader_required
@json_action
def submit(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    _may_sign(request, release)
    body = _body(request)
    _take_nonce(request, release, body.get("nonce"))
    envelope = body.get("envelope")
    if not isinstance(envelope, dict):
        raise actions.ActionError("send the signed envelope (payloadType, payload, signatures)")
    decision = actions.record_decision(actor=request.user, release=release, envelope=envelope)
    answer = gate.evaluate(queries.gate_facts(Release.objects.get(pk=release.pk)))
    return JsonResponse(
        {
            "decision": str(decision.pk),
            "type": decision.decision,
            "state": answer.state,
            "state_label": figures.STATES.get(answer.state, (answer.state, ""))[0],
            "message": f"Your {decision.decision} was verified and recorded (decision "
            f"{decision.pk}). The release is now: "
            f"{figures.STATES.get(answer.state, (answer.state, ''))[0].lower()}.",
        },
        status=201,
    )
