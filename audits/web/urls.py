"""The UI's routes, mounted at the site root by config.urls."""

from django.urls import path

from audits.web.views import (
    auth,
    catalog,
    check_runs,
    dashboard,
    keys,
    ledger,
    model_versions,
    policies,
    releases,
    signing,
)

app_name = "web"
urlpatterns = [
    path("", dashboard.home, name="dashboard"),
    path("running/", dashboard.running_partial, name="running"),
    path("login/", auth.Login.as_view(), name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("models/", model_versions.model_list, name="models"),
    path("models/<uuid:pk>/", model_versions.model_detail, name="model"),
    path("releases/<uuid:pk>/", releases.release_detail, name="release"),
    path("releases/<uuid:pk>/live/", releases.release_live, name="release-live"),
    path("releases/<uuid:pk>/exports/", releases.release_exports, name="release-exports"),
    path("releases/<uuid:pk>/withdraw/", releases.withdraw, name="withdraw"),
    path("releases/<uuid:pk>/rerun/", releases.rerun, name="rerun"),
    path("releases/<uuid:pk>/export/", releases.export, name="export"),
    path("releases/<uuid:pk>/sign/", signing.sign_page, name="sign"),
    path("releases/<uuid:pk>/sign/reauth/", signing.reauth, name="sign-reauth"),
    path("releases/<uuid:pk>/sign/submit/", signing.submit, name="sign-submit"),
    path("check-runs/<uuid:pk>/", check_runs.check_run_detail, name="check-run"),
    path("check-runs/<uuid:pk>/progress/", check_runs.check_run_progress, name="run-progress"),
    path("check-runs/<uuid:pk>/cancel/", releases.cancel, name="cancel"),
    path("evidence/<uuid:pk>/", check_runs.evidence_raw, name="evidence"),
    path("catalog/", catalog.catalog, name="catalog"),
    path("catalog/<uuid:pk>/review/", catalog.review, name="feature-review"),
    path("policies/", policies.policy_list, name="policies"),
    path("policies/new/", policies.policy_create, name="policy-create"),
    path("policies/assign/", policies.policy_assign, name="policy-assign"),
    path("policies/kinds/", policies.kind_help, name="kind-help-query"),
    path("policies/kinds/<slug:name>/", policies.kind_help, name="kind-help"),
    path("policies/<uuid:pk>/", policies.policy_detail, name="policy"),
    path("policies/<uuid:pk>/edit/", policies.policy_edit, name="policy-edit"),
    path("policies/<uuid:pk>/publish/", policies.policy_publish, name="policy-publish"),
    path("policies/<uuid:pk>/new-version/", policies.policy_new_version, name="policy-version"),
    path("keys/", keys.key_list, name="keys"),
    path("keys/<str:key_id>/revoke/", keys.revoke, name="key-revoke"),
    path("ledger/", ledger.ledger_page, name="ledger"),
]
