"""Model versions: every family's versions with their lineage, and one version's digests,
lenses and releases."""

from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from audits.models import CatalogFeature, ModelVersion, Release
from audits.web.access import reader_required
from audits.web.pages import render_page


def lineage_tree(versions: list[ModelVersion]) -> list[dict]:
    """Versions of one family in lineage order: each parent before its children, indented by
    depth (a version whose parent is in another family starts at depth 0)."""
    by_parent: dict = {}
    ids = {v.pk for v in versions}
    for version in versions:
        parent = version.parent_id if version.parent_id in ids else None
        by_parent.setdefault(parent, []).append(version)
    rows: list[dict] = []

    def walk(parent, depth: int) -> None:
        for version in sorted(by_parent.get(parent, []), key=lambda v: v.registered_at):
            rows.append({"version": version, "depth": depth, "indent": depth * 1.5})
            walk(version.pk, depth + 1)

    walk(None, 0)
    return rows


@reader_required
def model_list(request: HttpRequest) -> HttpResponse:
    versions = list(
        ModelVersion.objects.select_related("registered_by", "parent").annotate(
            n_lenses=Count("lenses", distinct=True)
        )
    )
    releases = dict(Release.objects.values_list("model_version").annotate(n=Count("pk")).order_by())
    families: dict[str, list[ModelVersion]] = {}
    for version in versions:
        version.n_releases = releases.get(version.pk, 0)  # type: ignore[attr-defined]
        families.setdefault(version.family, []).append(version)
    return render_page(
        request,
        "web/models.html",
        {
            "families": [
                {"family": family, "rows": lineage_tree(items)}
                for family, items in sorted(families.items())
            ]
        },
        section="models",
    )


def ancestors(version: ModelVersion, limit: int = 20) -> list[ModelVersion]:
    chain: list[ModelVersion] = []
    current = version.parent
    while current is not None and len(chain) < limit:
        chain.append(current)
        current = current.parent
    return list(reversed(chain))


@reader_required
def model_detail(request: HttpRequest, pk) -> HttpResponse:
    version = get_object_or_404(ModelVersion.objects.select_related("registered_by"), pk=pk)
    lenses = list(
        version.lenses.select_related("registered_by").annotate(
            n_confirmed=Count(
                "features", filter=_status(CatalogFeature.Status.CONFIRMED), distinct=True
            ),
            n_proposed=Count(
                "features", filter=_status(CatalogFeature.Status.PROPOSED), distinct=True
            ),
        )
    )
    files = sorted((version.file_digests or {}).items())
    return render_page(
        request,
        "web/model_detail.html",
        {
            "version": version,
            "ancestors": ancestors(version),
            "children": version.children.order_by("registered_at"),
            "lenses": lenses,
            "files": files,
            "releases": Release.objects.filter(model_version=version)
            .select_related("policy", "submitter")
            .order_by("-opened_at"),
        },
        section="models",
    )


def _status(status: str):
    from django.db.models import Q

    return Q(features__status=status)
