"""Release policies: every version, which family each applies to, and for admins an editor
of drafts (required checks with parameters and thresholds validated against each kind's
schema), a diff against the previous version, publishing and assignment."""

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from audits import actions, checkkinds
from audits.models import CheckPolicy, PolicyAssignment
from audits.web import kinds, policy_diff
from audits.web.access import ADMINS, reader_required, require
from audits.web.errors import form_action
from audits.web.forms import (
    AssignForm,
    NewPolicyForm,
    PolicyForm,
    RequiredCheckFormSet,
)
from audits.web.pages import render_page


def _list_context(new_form=None, formset=None, open_new: bool = False) -> dict:
    policies = CheckPolicy.objects.select_related("published_by", "created_by").prefetch_related(
        "required_checks"
    )
    names: dict[str, list[CheckPolicy]] = {}
    for policy in policies.order_by("name", "-version"):
        names.setdefault(policy.name, []).append(policy)
    return {
        "names": sorted(names.items()),
        "assignments": PolicyAssignment.objects.select_related("assigned_by"),
        "new_form": new_form or NewPolicyForm(),
        "checks": formset or RequiredCheckFormSet(prefix="checks"),
        "assign_form": AssignForm(),
        "open_new": open_new,
        "kinds": checkkinds.available(),
    }


@reader_required
def policy_list(request: HttpRequest) -> HttpResponse:
    return render_page(request, "web/policies.html", _list_context(), section="policies")


def previous_version(policy: CheckPolicy) -> CheckPolicy | None:
    return (
        CheckPolicy.objects.filter(name=policy.name, version__lt=policy.version)
        .order_by("-version")
        .first()
    )


def _checks_initial(policy: CheckPolicy) -> list[dict]:
    return [check.content() for check in policy.required_checks.all()]


def editor(policy: CheckPolicy, data=None) -> tuple[PolicyForm, Any]:
    form = PolicyForm(
        data,
        initial={
            "description": policy.description,
            "approvals_required": policy.approvals_required,
            "submitter_may_approve": policy.submitter_may_approve,
        },
    )
    formset = RequiredCheckFormSet(data, prefix="checks", initial=_checks_initial(policy))
    return form, formset


@reader_required
def policy_detail(request: HttpRequest, pk) -> HttpResponse:
    policy = get_object_or_404(
        CheckPolicy.objects.select_related("published_by", "created_by"), pk=pk
    )
    return _detail(request, policy)


def _detail(request, policy: CheckPolicy, form=None, formset=None, status: int = 200):
    previous = previous_version(policy)
    if form is None:
        form, formset = editor(policy)
    chosen = (
        {str(f["kind"].value()) for f in formset.forms if f["kind"].value()} if formset else set()
    )
    used = sorted({c.kind for c in policy.required_checks.all()} | chosen)
    return render_page(
        request,
        "web/policy.html",
        {
            "policy": policy,
            "checks": [check_row(c) for c in policy.required_checks.all()],
            "previous": previous,
            "diff": policy_diff.diff(previous.content(), policy.content()) if previous else None,
            "form": form,
            "formset": formset,
            "editable": not policy.is_published,
            "kind_help": [h for h in (kinds.describe(k) for k in used) if h],
            "kinds": checkkinds.available(),
            "releases": policy.releases.select_related("model_version").order_by("-opened_at")[:20],
        },
        section="policies",
        status=status,
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


def check_row(check) -> dict:
    """A required check as the policy page lists it: values as JSON writes them, thresholds
    that are set (an unset threshold is no bar)."""
    return {
        "check": check,
        "parameters": [(k, _json_text(v)) for k, v in (check.parameters or {}).items()],
        "thresholds": [
            (k, _json_text(v)) for k, v in (check.thresholds or {}).items() if v is not None
        ],
    }


def _checks_from(formset) -> list[dict]:
    return [
        {
            "key": f.cleaned_data["key"],
            "kind": f.cleaned_data["kind"],
            "parameters": f.cleaned_data.get("parameters") or {},
            "thresholds": f.cleaned_data.get("thresholds") or {},
            "blocking": f.cleaned_data.get("blocking", False),
        }
        for f in formset.forms
        if f.cleaned_data and not f.cleaned_data.get("DELETE") and f.cleaned_data.get("key")
    ]


@require_POST
@reader_required
def policy_edit(request: HttpRequest, pk) -> HttpResponse:
    policy = get_object_or_404(CheckPolicy, pk=pk)
    require(request.user, ADMINS, "editing a policy")
    form, formset = editor(policy, request.POST)
    if not (form.is_valid() and formset.is_valid()):
        messages.error(request, "The draft was not saved: see the problems marked below.")
        return _detail(request, policy, form, formset, status=400)
    try:
        actions.update_draft_policy(
            actor=request.user,
            policy=policy,
            changes=form.cleaned_data,
            checks=_checks_from(formset),
        )
    except (checkkinds.CheckSpecError, actions.ActionError) as exc:
        messages.error(request, f"The draft was not saved: {exc}")
        return _detail(request, policy, form, formset, status=400)
    messages.success(request, f"Draft {policy} saved.")
    return redirect(f"/policies/{policy.pk}/")


@require_POST
@reader_required
def policy_create(request: HttpRequest) -> HttpResponse:
    require(request.user, ADMINS, "creating a policy")
    form = NewPolicyForm(request.POST)
    formset = RequiredCheckFormSet(request.POST, prefix="checks")
    if form.is_valid() and formset.is_valid():
        try:
            policy = actions.create_policy(
                actor=request.user,
                name=form.cleaned_data["name"],
                checks=_checks_from(formset),
                description=form.cleaned_data["description"],
                approvals_required=form.cleaned_data["approvals_required"],
                submitter_may_approve=form.cleaned_data["submitter_may_approve"],
            )
        except (checkkinds.CheckSpecError, actions.ActionError) as exc:
            messages.error(request, f"The policy was not created: {exc}")
        else:
            messages.success(request, f"Draft {policy} created; add checks and publish it.")
            return redirect(f"/policies/{policy.pk}/")
    else:
        messages.error(request, "The policy was not created: see the problems marked below.")
    return render_page(
        request,
        "web/policies.html",
        _list_context(form, formset, open_new=True),
        section="policies",
        status=400,
    )


@require_POST
@reader_required
@form_action
def policy_new_version(request: HttpRequest, pk) -> HttpResponse:
    """A new draft with this policy's content: the next version, to edit and publish."""
    policy = get_object_or_404(CheckPolicy, pk=pk)
    require(request.user, ADMINS, "creating a policy version")
    draft = actions.create_policy(
        actor=request.user,
        name=policy.name,
        checks=_checks_initial(policy),
        description=policy.description,
        approvals_required=policy.approvals_required,
        submitter_may_approve=policy.submitter_may_approve,
    )
    messages.success(request, f"Draft {draft} created from {policy}.")
    return redirect(f"/policies/{draft.pk}/")


@require_POST
@reader_required
@form_action
def policy_publish(request: HttpRequest, pk) -> HttpResponse:
    policy = get_object_or_404(CheckPolicy, pk=pk)
    require(request.user, ADMINS, "publishing a policy")
    published = actions.publish_policy(actor=request.user, policy=policy)
    messages.success(
        request, f"{published} is published (digest {published.digest}); it can no longer change."
    )
    return redirect(f"/policies/{policy.pk}/")


@require_POST
@reader_required
@form_action
def policy_assign(request: HttpRequest) -> HttpResponse:
    require(request.user, ADMINS, "assigning a policy")
    form = AssignForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a published policy to assign.")
        return redirect("/policies/")
    assignment = actions.assign_policy(
        actor=request.user,
        family=form.cleaned_data["family"],
        policy_name=form.cleaned_data["policy_name"],
    )
    messages.success(
        request,
        f"New releases of {assignment.family or 'every family without its own assignment'} "
        f"are opened under the newest published version of {assignment.policy_name}.",
    )
    return redirect("/policies/")


@reader_required
def kind_help(request: HttpRequest, name: str = "") -> HttpResponse:
    """A kind's parameters and thresholds, for the editor (htmx swaps it in on a kind change;
    the select sends its value under its own field name, e.g. checks-0-kind)."""
    if not name:
        name = next((request.GET[k] for k in request.GET if k.endswith("kind")), "")
    return render(request, "web/partials/kind_help.html", {"help": kinds.describe(name)})
