"""A check run: its verdict and summary, its evidence with a viewer per kind (token heat maps,
the attribution graph, before / after, answers with their labels), its log and provenance."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from audits import actions, checkkinds
from audits.models import CheckRun, Evidence, EvidenceIntegrityError
from audits.roles import has_role
from audits.web import evidence, figures, graphs
from audits.web.access import SUBMITTERS, reader_required
from audits.web.pages import render_page

# kind -> (viewer, the key its document must have, the presenter)
VIEWERS = {
    "feature_discovery": ("discovery", "features", evidence.discovery_view),
    "feature_activation_audit": ("audit", "prompt_ids", evidence.audit_view),
    "behavior_probe": ("behavior", "responses", evidence.behavior_view),
    "feature_intervention": ("intervention", "groups", evidence.intervention_view),
}


def _run(pk) -> CheckRun:
    return get_object_or_404(
        CheckRun.objects.select_related(
            "release__model_version", "release__policy", "required_check", "cancelled_by"
        ),
        pk=pk,
    )


def _record_problems(request: HttpRequest, reads: list[evidence.Read]) -> None:
    """A file that no longer matches its sha256 is an incident: the ledger records it, as the
    API's download does."""
    for read in reads:
        if read.problem and "sha256" in read.problem:
            actions.record_evidence_integrity_failure(
                actor=request.user, evidence=read.row, message=read.problem
            )


def viewers(run: CheckRun, reads: list[evidence.Read]) -> list[dict]:
    """The kind's viewers over its JSON evidence, and the graph viewer wherever a graph is."""
    found = []
    files = next(
        (r.data for r in reads if r.row.title == graphs.FEATURE_FILES_TITLE and r.data), None
    )
    for read in reads:
        if not read.is_json or not isinstance(read.data, dict) or read.row.title == "manifest.json":
            continue
        if graphs.is_graph(read.data):
            found.append(
                {
                    "name": "graph",
                    "evidence": read.row,
                    "data": graphs.summary(read.data),
                    "features": graphs.feature_info(run, read.data, files),
                    "features_id": f"graph-features-{read.row.pk}",
                }
            )
        elif run.kind in VIEWERS and VIEWERS[run.kind][1] in read.data:
            name, _, build = VIEWERS[run.kind]
            found.append({"name": name, "evidence": read.row, "data": build(read.data)})
    return found


def other_blocks(reads: list[evidence.Read], shown: set) -> list[dict]:
    return [
        {"evidence": read.row, "blocks": evidence.blocks(read.data)}
        for read in reads
        if read.is_json
        and read.data is not None
        and read.row.pk not in shown
        and read.row.title not in ("manifest.json", graphs.FEATURE_FILES_TITLE)
    ]


def attempts(run: CheckRun) -> list[CheckRun]:
    return list(
        CheckRun.objects.filter(release_id=run.release_id, required_check_id=run.required_check_id)
        .only("id", "attempt", "status", "verdict")
        .order_by("attempt")
    )


def may_manage(user, run: CheckRun) -> bool:
    return (
        has_role(user, *SUBMITTERS)
        and run.release.may_be_managed_by(user)
        and run.release.withdrawn_at is None
    )


def _evidence_kind(kind: str) -> str:
    try:
        return checkkinds.get(kind).evidence_kind
    except checkkinds.CheckSpecError:
        return ""


@reader_required
def check_run_detail(request: HttpRequest, pk) -> HttpResponse:
    run = _run(pk)
    rows = list(run.evidence.all())
    reads = [evidence.read_evidence(row) for row in rows]
    _record_problems(request, reads)
    found = viewers(run, reads)
    kind = _evidence_kind(run.kind)
    manage = may_manage(request.user, run)
    return render_page(
        request,
        "web/check_run.html",
        {
            "run": run,
            "release": run.release,
            "attempts": attempts(run),
            "evidence_kind": kind,
            "evidence_kind_text": figures.EVIDENCE_KINDS.get(kind, ""),
            "key_figures": figures.key_figures(run.kind, run.metrics or {}, limit=4),
            "metrics": figures.metric_rows(run.metrics or {}),
            "reads": reads,
            "viewers": found,
            "others": other_blocks(reads, {v["evidence"].pk for v in found}),
            "provenance": evidence.flat_pairs(run.provenance or {}),
            "parameters": evidence.flat_pairs(run.required_check.parameters or {}),
            "thresholds": evidence.flat_pairs(run.required_check.thresholds or {}),
            "percent": round(100 * (run.progress or 0)),
            "manage": manage,
        },
        section="dashboard",
    )


@reader_required
def check_run_progress(request: HttpRequest, pk) -> HttpResponse:
    run = _run(pk)
    return render(
        request,
        "web/partials/run_progress.html",
        {
            "run": run,
            "percent": round(100 * (run.progress or 0)),
            "manage": may_manage(request.user, run),
        },
    )


RAW_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"


@reader_required
def evidence_raw(request: HttpRequest, pk) -> HttpResponse:
    """An evidence file's bytes, re-hashed first. Figures are shown inline (under a policy that
    runs nothing); everything else downloads."""
    row = get_object_or_404(Evidence, pk=pk)
    try:
        data = row.read_bytes()
    except EvidenceIntegrityError as exc:
        actions.record_evidence_integrity_failure(
            actor=request.user, evidence=row, message=str(exc)
        )
        return render_page(
            request,
            "web/error.html",
            {
                "status": 409,
                "title": "This evidence file was altered",
                "advice": "The ledger recorded the failure. Tell an admin; do not sign over it.",
                "detail": str(exc),
            },
            status=409,
        )
    inline = row.media_type in ("image/svg+xml", "image/png")
    if row.media_type == "application/json" and request.GET.get("inline") == "1":
        inline = True  # the graph viewer's fetch
    response = HttpResponse(data, content_type=row.media_type)
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{_filename(row.title)}"'
    response["Content-Security-Policy"] = RAW_CSP
    response["Digest"] = f"sha-256={row.sha256}"
    return response


def _filename(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in title) or "evidence"
