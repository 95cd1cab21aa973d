"""The feature catalog: lens features proposed by discovery (or carried by drift matching),
with their top contexts and statistics; reviewers confirm, reject or relabel them."""

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.views.decorators.http import require_POST

from audits import actions
from audits.models import CatalogFeature, Lens
from audits.web import evidence, figures
from audits.web.access import REVIEWERS, reader_required, require
from audits.web.errors import back_to, form_action
from audits.web.forms import FeatureReviewForm
from audits.web.pages import render_page

STATUSES = tuple(CatalogFeature.Status.values)
PAGE_SIZE = 25


def feature_card(feature: CatalogFeature) -> dict:
    numbers = feature.evidence or {}
    auroc = figures.shown(numbers, "auroc")
    risk = figures.shown(numbers, "firing_rate_risk")
    neutral = figures.shown(numbers, "firing_rate_neutral")
    return {
        "feature": feature,
        "auroc": auroc,
        "auroc_bar": figures.bar(auroc),
        "effect": figures.shown(numbers, "effect_size"),
        "risk": risk,
        "risk_bar": figures.bar(risk),
        "neutral": neutral,
        "neutral_bar": figures.bar(neutral),
        "contexts": evidence.contexts_lines(numbers.get("contexts") or []),
        "form": FeatureReviewForm(
            initial={"label": feature.label, "risk_axis": feature.risk_axis},
            prefix=f"f{feature.pk.hex[:8]}",
        ),
    }


@reader_required
def catalog(request: HttpRequest) -> HttpResponse:
    status = request.GET.get("status", CatalogFeature.Status.PROPOSED)
    lens_id = request.GET.get("lens", "")
    axis = request.GET.get("axis", "")
    features = CatalogFeature.objects.select_related(
        "lens__model_version", "reviewed_by", "proposed_by_run"
    ).order_by("lens__name", "index")
    if status in STATUSES:
        features = features.filter(status=status)
    if lens_id:
        features = features.filter(lens_id=_uuid_or_none(lens_id))
    if axis:
        features = features.filter(risk_axis=axis)
    page = Paginator(features, PAGE_SIZE).get_page(request.GET.get("page"))
    axes = (
        CatalogFeature.objects.exclude(risk_axis="")
        .values_list("risk_axis", flat=True)
        .distinct()
        .order_by("risk_axis")
    )
    return render_page(
        request,
        "web/catalog.html",
        {
            "cards": [feature_card(f) for f in page],
            "page": page,
            "status": status if status in STATUSES else "",
            "statuses": STATUSES,
            "lenses": Lens.objects.select_related("model_version").order_by("name"),
            "lens_id": lens_id,
            "axes": list(axes),
            "axis": axis,
            "query": _without_page(request),
        },
        section="catalog",
    )


def _without_page(request: HttpRequest) -> str:
    params = request.GET.copy()
    params.pop("page", None)
    return params.urlencode()


def _uuid_or_none(value: str):
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@require_POST
@reader_required
@form_action
def review(request: HttpRequest, pk) -> HttpResponse:
    feature = get_object_or_404(CatalogFeature, pk=pk)
    require(request.user, REVIEWERS, "reviewing catalog features")
    form = FeatureReviewForm(request.POST, prefix=f"f{feature.pk.hex[:8]}")
    if not form.is_valid():
        problems = "; ".join(
            f"{name}: {' '.join(str(e) for e in errs)}" for name, errs in form.errors.items()
        )
        messages.error(request, f"Feature {feature.index} was not changed: {problems}")
    else:
        actions.review_feature(actor=request.user, feature=feature, **form.cleaned_data)
        messages.success(
            request,
            f"Feature {feature.index} of {feature.lens.name}: {form.cleaned_data['status']}.",
        )
    return redirect(back_to(request, "/catalog/"))
