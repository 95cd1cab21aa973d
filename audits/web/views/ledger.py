"""The ledger: every event, the latest signed checkpoint, and (in the browser) a check of any
event's inclusion proof against that checkpoint."""

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.utils.http import urlencode

from audits import ledger
from audits.ledger import LedgerIntegrityError
from audits.models import AuditEvent
from audits.web import events
from audits.web.access import reader_required
from audits.web.pages import render_page

PAGE_SIZE = 50


@reader_required
def ledger_page(request: HttpRequest) -> HttpResponse:
    verb = request.GET.get("verb", "")
    target = request.GET.get("target", "")
    found = AuditEvent.objects.order_by("-seq")
    if verb:
        found = found.filter(verb=verb)
    if target:
        found = found.filter(target_id=target)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    problem = ""
    try:
        point = ledger.checkpoint()
    except LedgerIntegrityError as exc:
        point, problem = None, str(exc)
    return render_page(
        request,
        "web/ledger.html",
        {
            "page": page,
            "rows": [events.row(e) for e in page],
            "verb": verb,
            "target": target,
            "verbs": [v.value for v in ledger.Verb],
            "checkpoint": point,
            "public_key": ledger.server_public_key(),
            "problem": problem,
            "query": urlencode({k: v for k, v in (("verb", verb), ("target", target)) if v}),
        },
        section="ledger",
    )
