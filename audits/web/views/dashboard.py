"""The dashboard: releases by state, what waits for the viewer's review, checks running now,
and the latest ledger events. Signed-out visitors see what Assay is and where to sign in."""

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audits import queries
from audits.models import AuditEvent, CheckRun, Decision, Release
from audits.web import events, figures
from audits.web.access import may_read, reader_required
from audits.web.pages import render_page

STATE_ORDER = ("checking", "in_review", "approved", "rejected", "withdrawn", "draft")
OPEN_STATES = ("checking", "in_review")
MAX_CANDIDATES = 50


def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated or not may_read(request.user):
        return render_page(request, "web/landing.html", {}, section="dashboard")
    return dashboard(request)


def state_bars(counts: dict[str, int]) -> list[dict]:
    total = sum(counts.values()) or 1
    return [
        {
            "state": state,
            "label": figures.STATES[state][0],
            "count": counts.get(state, 0),
            "width": round(100 * counts.get(state, 0) / total, 2),
        }
        for state in STATE_ORDER
        if counts.get(state, 0)
    ]


def waiting_for(user) -> list[Release]:
    """Open releases the person may decide on whose current evidence they have not decided."""
    candidates = (
        Release.objects.filter(state__in=OPEN_STATES, withdrawn_at__isnull=True)
        .select_related("model_version", "policy", "submitter")
        .order_by("-opened_at")[:MAX_CANDIDATES]
    )
    waiting = []
    for release in candidates:
        if not queries.may_decide(user, release):
            continue
        current = queries.evidence_digest(release)
        mine = [
            d
            for d in queries.decisions_in_ledger_order(release)
            if d.reviewer_id == user.pk and d.decision != Decision.Type.WAIVE
        ]
        if not mine or mine[-1].evidence_digest != current:
            waiting.append(release)
    return waiting


def running_runs():
    return (
        CheckRun.objects.filter(status__in=(CheckRun.Status.QUEUED, CheckRun.Status.RUNNING))
        .select_related("release__model_version", "required_check")
        .order_by("queued_at")[:50]
    )


@reader_required
def dashboard(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    counts = dict(Release.objects.values_list("state").annotate(n=Count("pk")))
    releases = Release.objects.select_related("model_version", "policy", "submitter")
    if state in figures.STATES:
        releases = releases.filter(state=state)
    return render_page(
        request,
        "web/dashboard.html",
        {
            "bars": state_bars(counts),
            "total": sum(counts.values()),
            "state": state if state in figures.STATES else "",
            "state_label": figures.STATES.get(state, ("", ""))[0],
            "releases": releases.order_by("-opened_at")[:25],
            "waiting": waiting_for(request.user),
            "runs": running_runs(),
            "events": [events.row(e) for e in AuditEvent.objects.order_by("-seq")[:12]],
        },
        section="dashboard",
    )


@reader_required
def running_partial(request: HttpRequest) -> HttpResponse:
    """The running checks, for the dashboard's polling (htmx)."""
    return render(request, "web/partials/running.html", {"runs": running_runs()})
