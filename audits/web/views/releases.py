"""A release: the gate's answer and every reason in words, the check matrix with live progress,
decisions, trust warnings, dossier exports, and the actions the viewer may take."""

from dataclasses import dataclass

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from audits import actions, checkkinds, gate, queries
from audits.models import CheckRun, Decision, Release
from audits.web import dossiers, figures
from audits.web.access import EXPORTERS, SUBMITTERS, reader_required, release_abilities, require
from audits.web.errors import back_to, form_action
from audits.web.forms import RerunForm, WithdrawForm
from audits.web.pages import render_page


@dataclass(frozen=True)
class CheckRow:
    run: CheckRun
    key: str
    blocking: bool
    waived: bool
    figures: list
    attempts: int
    evidence_kind: str
    percent: int


def _evidence_kind(kind: str) -> str:
    try:
        return checkkinds.get(kind).evidence_kind
    except checkkinds.CheckSpecError:
        return ""


def check_rows(release: Release, facts: gate.ReleaseFacts) -> list[CheckRow]:
    waived = {c.key for c in facts.checks if c.waived}
    attempts: dict[int, int] = {}
    for run in release.check_runs.all():
        attempts[run.required_check_id] = attempts.get(run.required_check_id, 0) + 1
    rows = [
        CheckRow(
            run=run,
            key=run.required_check.key,
            blocking=run.required_check.blocking,
            waived=run.required_check.key in waived,
            figures=figures.key_figures(run.kind, run.metrics or {}),
            attempts=attempts.get(run.required_check_id, 1),
            evidence_kind=_evidence_kind(run.kind),
            percent=round(100 * (run.progress or 0)),
        )
        for run in queries.counting_runs(release)
    ]
    return sorted(rows, key=lambda row: row.key)


@dataclass(frozen=True)
class DecisionRow:
    decision: Decision
    counts: bool
    note: str
    standing: bool
    name: str


def decision_rows(release: Release) -> list[DecisionRow]:
    current = queries.evidence_digest(release)
    standing = {d.pk for d in queries.standing_decisions(release)}
    rows = []
    for decision in queries.decisions_in_ledger_order(release):
        facts = queries.decision_facts(decision, release, current)
        signer = (decision.statement.get("predicate") or {}).get("signer") or {}
        rows.append(
            DecisionRow(
                decision=decision,
                counts=facts.counts and decision.pk in standing,
                note=facts.note if decision.pk in standing else "superseded by a later decision",
                standing=decision.pk in standing,
                name=str(signer.get("name") or decision.reviewer.get_username()),
            )
        )
    return rows


def approvals(facts: gate.ReleaseFacts) -> dict:
    counted = {d.reviewer_id for d in facts.decisions if d.decision == "approve" and d.counts}
    need = facts.approvals_required
    return {
        "have": len(counted),
        "need": need,
        "pips": [i < len(counted) for i in range(max(need, len(counted)))],
    }


def live_context(release: Release) -> dict:
    """What the polled part of the page shows: the gate answer and the check matrix."""
    facts = queries.gate_facts(release)
    answer = gate.evaluate(facts)
    rows = check_rows(release, facts)
    return {
        "release": release,
        "answer": answer,
        "state_label": figures.STATES.get(answer.state, (answer.state, ""))[0],
        "state_words": figures.STATES.get(answer.state, ("", ""))[1],
        "checks": rows,
        "approvals": approvals(facts),
        "live": any(not row.run.is_finished for row in rows),
    }


def _release(pk) -> Release:
    return get_object_or_404(
        Release.objects.select_related("model_version", "policy", "submitter"), pk=pk
    )


@reader_required
def release_detail(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    abilities = release_abilities(request.user, release)
    exports = dossiers.exports(release)
    context = live_context(release)
    context.update(
        abilities=abilities,
        decisions=decision_rows(release),
        exports=exports,
        exports_live=any(e.unfinished for e in exports or []),
        withdraw_form=WithdrawForm(),
        policy=release.policy,
        model_version=release.model_version,
    )
    return render_page(request, "web/release.html", context, section="dashboard")


@reader_required
def release_live(request: HttpRequest, pk) -> HttpResponse:
    """The gate answer and check matrix, for the release page's polling (htmx)."""
    release = _release(pk)
    context = live_context(release)
    context["abilities"] = release_abilities(request.user, release)
    return render_page(request, "web/partials/release_live.html", context)


@reader_required
def release_exports(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    exports = dossiers.exports(release)
    return render_page(
        request,
        "web/partials/exports.html",
        {
            "release": release,
            "exports": exports,
            "exports_live": any(e.unfinished for e in exports or []),
            "abilities": release_abilities(request.user, release),
        },
    )


@require_POST
@reader_required
@form_action
def withdraw(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    require(request.user, SUBMITTERS, "withdrawing a release")
    form = WithdrawForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why the release is withdrawn (up to 2,000 characters).")
        return redirect(release_url(release))
    actions.withdraw_release(
        actor=request.user, release=release, reason=form.cleaned_data["reason"]
    )
    messages.success(request, "The release was withdrawn; its unfinished checks were cancelled.")
    return redirect(release_url(release))


@require_POST
@reader_required
@form_action
def rerun(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    require(request.user, SUBMITTERS, "re-running a check")
    form = RerunForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Name the check to run again.")
        return redirect(release_url(release))
    run = actions.rerun_check(
        actor=request.user, release=release, check_key=form.cleaned_data["check"]
    )
    messages.success(
        request,
        f"Check {run.required_check.key!r} was queued again (attempt {run.attempt}); approvals "
        "signed over the earlier attempt no longer count once it finishes differently.",
    )
    return redirect(release_url(release))


@require_POST
@reader_required
@form_action
def cancel(request: HttpRequest, pk) -> HttpResponse:
    run = get_object_or_404(CheckRun.objects.select_related("release", "required_check"), pk=pk)
    require(request.user, SUBMITTERS, "cancelling a check")
    actions.cancel_check_run(actor=request.user, run=run)
    messages.success(request, f"Check {run.required_check.key!r} was cancelled.")
    return redirect(back_to(request, release_url(run.release)))


@require_POST
@reader_required
@form_action
def export(request: HttpRequest, pk) -> HttpResponse:
    release = _release(pk)
    require(request.user, EXPORTERS, "exporting a dossier")
    dossiers.request_export(actor=request.user, release=release)
    messages.success(request, "A dossier export was queued; it appears below when it is ready.")
    return redirect(release_url(release) + "#dossier")


def release_url(release: Release) -> str:
    return f"/releases/{release.pk}/"
