"""The UI in a real browser (Debian's Chromium under Playwright) against a live server: two
reviewers make keys in their browsers and sign, the gate turns approved; a submitter sees no
sign button on their own release; an auditor reads everything and can change nothing; the
graph viewer, the ledger's in-browser inclusion check and RFC 8785 in JavaScript against the
server's Python. Screenshots of every page go to var/screenshots/."""

import json

import pytest

from audits import canonical, queries
from audits.gate import evaluate
from audits.models import AuditEvent, Decision, Release, ReviewerKey
from tests.web import samples
from tests.web.browser import (
    NARROW,
    WIDE,
    needs_chromium,
    no_horizontal_overflow,
    password_of,
    shoot,
    unlabelled_controls,
)

pytestmark = [pytest.mark.browser, needs_chromium, pytest.mark.django_db(transaction=True)]


def _state(release) -> str:
    return evaluate(queries.gate_facts(Release.objects.get(pk=release.pk))).state


def _make_key(page, base: str) -> str:
    page.goto(f"{base}/keys/")
    page.get_by_label("A name for this key").fill("laptop browser")
    page.get_by_role("button", name="Create and register a key").click()
    page.locator("#key-status.message-success").wait_for()
    page.wait_for_load_state("load")
    page.get_by_text("registered and active").wait_for()
    return page.locator("#browser-keys code").first.inner_text()


def _sign(page, base: str, release, rationale: str, username: str) -> None:
    page.goto(f"{base}/releases/{release.pk}/")
    page.get_by_role("link", name="Sign a decision").click()
    page.get_by_label("Rationale (required)").fill(rationale)
    page.get_by_label("Conditions (one per line, optional)").fill("monitor refusals weekly")
    page.get_by_role("button", name="Review what I will sign").click()
    page.locator("#review").wait_for()
    assert "Meaning:" in page.locator("#statement-words").inner_text()
    shoot(page, f"sign-review-{username}")
    page.get_by_label("Your password, to confirm that you are signing").fill(password_of(username))
    page.get_by_role("button", name="Sign and submit").click()
    page.locator("#sign-status.message-success").wait_for()


def test_two_reviewers_sign_in_their_browsers_and_the_gate_turns_approved(
    open_page, live_server, personas, evidence_release
):
    base = live_server.url
    release = evidence_release
    assert _state(release) == "in_review"

    page = open_page("reviewer")
    shoot(page, "dashboard")
    assert page.get_by_role("heading", name="Waiting for my review").is_visible()
    page.get_by_role(
        "link", name=f"{release.model_version.family}@{release.model_version.version}"
    ).first.click()
    page.wait_for_url(f"{base}/releases/{release.pk}/")
    assert page.get_by_text("0 of 2 required approvals count").is_visible()
    shoot(page, "release")

    # The graph viewer: hover, click a path to the output, filter a layer.
    page.get_by_role("link", name="circuit", exact=True).click()
    viewer = page.locator(".graph-viewer")
    viewer.and_(page.locator("[data-ready=circuit-tracer]")).wait_for()
    page.locator('g.node[data-id="0_11_4"]').hover()
    details = page.locator(".graph-details")
    assert "France" in details.inner_text()
    assert "Paris" in details.inner_text()  # its top context and the logits it promotes
    page.locator('g.node[data-id="0_11_4"]').click()
    assert viewer.get_attribute("data-highlighted") == "3"  # 0_11_4 -> 1_5_5 -> output
    assert page.locator("g.node.on").count() == 3
    assert page.locator("line.link.on").count() == 2
    shoot(page, "graph-viewer")
    page.get_by_label("layer 1").uncheck()
    assert page.locator('g.node[data-id="1_5_5"]').is_hidden()
    page.get_by_label("layer 1").check()

    key_id = _make_key(page, base)
    shoot(page, "keys")
    assert ReviewerKey.objects.get(key_id=key_id).user == personas.reviewer

    _sign(page, base, release, "Read every check's evidence, including the graph.", "reviewer")
    shoot(page, "signed")
    decision = Decision.objects.get(reviewer=personas.reviewer)
    assert decision.key_id == key_id
    assert decision.statement["predicate"]["signer"]["name"] == "reviewer"
    assert decision.conditions == ["monitor refusals weekly"]
    assert _state(release) == "in_review"

    second = open_page("reviewer2")
    _make_key(second, base)
    _sign(second, base, release, "Agree: the fingerprint matches and nothing blocks.", "reviewer2")
    assert _state(release) == "approved"
    second.goto(f"{base}/releases/{release.pk}/")
    assert second.get_by_text("May ship.").is_visible()
    assert second.get_by_text("2 of 2 required approvals count").is_visible()
    shoot(second, "release-approved")


def test_the_private_key_cannot_be_read_out_of_the_browser(open_page, live_server, personas):
    page = open_page("reviewer")
    page.goto(f"{live_server.url}/keys/")
    page.get_by_role("button", name="Create and register a key").click()
    page.locator("#key-status.message-success").wait_for()
    refused = page.evaluate(
        """async () => {
          const keys = await AssayKeys.list("reviewer");
          try { await crypto.subtle.exportKey("pkcs8", keys[0].keyPair.privateKey); return false; }
          catch (e) { return keys[0].keyPair.privateKey.extractable === false; }
        }"""
    )
    assert refused is True


def test_a_wrong_password_signs_nothing(open_page, live_server, personas, checked_release):
    page = open_page("reviewer")
    _make_key(page, live_server.url)
    page.goto(f"{live_server.url}/releases/{checked_release.pk}/sign/")
    page.get_by_label("Rationale (required)").fill("looks right")
    page.get_by_role("button", name="Review what I will sign").click()
    page.get_by_label("Your password, to confirm that you are signing").fill("not my password")
    page.get_by_role("button", name="Sign and submit").click()
    status = page.locator("#sign-status.message-error")
    status.wait_for()
    assert "not your password" in status.inner_text()
    assert not Decision.objects.exists()


def test_a_submitter_sees_no_sign_button_on_their_own_release(
    open_page, live_server, personas, checked_release
):
    page = open_page("submitter")
    page.goto(f"{live_server.url}/releases/{checked_release.pk}/")
    assert page.get_by_role("link", name="Sign a decision").count() == 0
    assert page.get_by_text("Withdraw this release").is_visible()
    shoot(page, "release-as-submitter")
    response = page.goto(f"{live_server.url}/releases/{checked_release.pk}/sign/")
    assert response.status == 403
    assert "four-eyes" in page.locator("main").inner_text()


AUDITOR_PAGES = [
    "/",
    "/models/",
    "/models/{model}/",
    "/releases/{release}/",
    "/releases/{release}/live/",
    "/check-runs/{run}/",
    "/catalog/?status=all",
    "/policies/",
    "/policies/{policy}/",
    "/keys/",
    "/ledger/",
]


def test_an_auditor_sees_everything_and_can_change_nothing(
    open_page, live_server, personas, evidence_release
):
    release = evidence_release
    run = release.check_runs.get(required_check__key="discover-weapons")
    page = open_page("auditor")
    for template in AUDITOR_PAGES:
        url = template.format(
            model=release.model_version_id, release=release.pk, run=run.pk, policy=release.policy_id
        )
        response = page.goto(live_server.url + url)
        assert response.status == 200, url
        # The only forms an auditor gets: signing out, and exporting a dossier (which changes
        # nothing the gate reads) and the GET filters.
        actions = page.eval_on_selector_all(
            "form[method=post]", "forms => forms.map(f => f.getAttribute('action'))"
        )
        assert set(actions) <= {"/logout/", f"/releases/{release.pk}/export/"}, (url, actions)
    assert page.get_by_role("link", name="Sign a decision").count() == 0
    token = page.evaluate("() => document.querySelector('[name=csrfmiddlewaretoken]').value")
    events_before = AuditEvent.objects.count()
    for url, data in [
        (f"/releases/{release.pk}/withdraw/", {"reason": "auditor"}),
        (f"/releases/{release.pk}/rerun/", {"check": "fingerprint"}),
        (f"/releases/{release.pk}/sign/reauth/", None),
        (f"/policies/{release.policy_id}/new-version/", {}),
        ("/policies/assign/", {"family": "", "policy_name": "ui-review"}),
    ]:
        if data is None:
            response = page.request.post(
                live_server.url + url,
                data=json.dumps({"password": "auditor-pw-123456"}),
                headers={"X-CSRFToken": token, "Content-Type": "application/json"},
            )
        else:
            response = page.request.post(
                live_server.url + url, form={**data, "csrfmiddlewaretoken": token}
            )
        assert response.status == 403, (url, response.status)
    assert AuditEvent.objects.count() == events_before
    assert _state(release) == "in_review"


def test_every_page_at_a_desktop_and_a_phone_width(
    open_page, live_server, personas, evidence_release
):
    release = evidence_release
    runs = {r.required_check.key: r for r in release.check_runs.select_related("required_check")}
    pages = {
        "dashboard": "/",
        "models": "/models/",
        "model": f"/models/{release.model_version_id}/",
        "release": f"/releases/{release.pk}/",
        "sign": f"/releases/{release.pk}/sign/",
        "run-discovery": f"/check-runs/{runs['discover-weapons'].pk}/",
        "run-audit": f"/check-runs/{runs['risk-audit'].pk}/",
        "run-behaviour": f"/check-runs/{runs['refusals'].pk}/",
        "run-intervention": f"/check-runs/{runs['ablation'].pk}/",
        "run-graph": f"/check-runs/{runs['circuit'].pk}/",
        "run-graph-v1": f"/check-runs/{runs['circuit-v1'].pk}/",
        "run-fingerprint": f"/check-runs/{runs['fingerprint'].pk}/",
        "catalog": "/catalog/?status=all",
        "policies": "/policies/",
        "policy": f"/policies/{release.policy_id}/",
        "keys": "/keys/",
        "ledger": "/ledger/",
    }
    for width, viewport in (("wide", WIDE), ("narrow", NARROW)):
        page = open_page("reviewer", viewport)
        for name, url in pages.items():
            response = page.goto(live_server.url + url)
            assert response.status == 200, url
            if name.startswith("run-graph"):
                page.locator(".graph-viewer[data-ready]").wait_for()
                assert page.locator(".graph-viewer").get_attribute("data-ready") != "error"
            assert no_horizontal_overflow(page), f"{name} scrolls sideways at {width}"
            assert not unlabelled_controls(page), (name, unlabelled_controls(page))
            shoot(page, f"{name}-{width}")
    login = open_page(None, NARROW)
    login.goto(f"{live_server.url}/login/")
    shoot(login, "login-narrow")


def test_keyboard_reaches_the_content_and_focus_is_visible(open_page, live_server, personas):
    page = open_page("reviewer")
    page.goto(f"{live_server.url}/ledger/")
    page.keyboard.press("Tab")
    skip = page.locator(".skip-link")
    assert skip.evaluate("e => e === document.activeElement")
    assert skip.is_visible()
    outline = skip.evaluate(
        "e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth"
    )
    assert outline.startswith("solid")
    assert not outline.endswith(" 0px")
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.closest('main') !== null")
    assert focused


TRICKY = [
    {"b": 1, "a": [1.5, 1e21, 1e-7, -0.0, 123456789.125, 0.1, 5e-324, 1.7976931348623157e308]},
    {"é": 'ü\n\u2028\u2029\t"\\\x01\x1f\x7f', "c": None, "t": True, "f": False},
    {"\U0001f600": 1, "\ue000": 2, "a": 3, "A": 4, "": 5, "\u00e9": 6},
    [0.000001, 0.0000001, 1e20, 1e22, -1.5e-9, 2.5e-6, 1e300, 100.0, -7, 9007199254740991],
    {"nested": {"z": [{"y": {"x": []}}], "empty": {}}},
]


def test_rfc8785_in_javascript_matches_the_servers_python(open_page, live_server, personas):
    page = open_page("reviewer")
    page.goto(f"{live_server.url}/ledger/")
    for value in TRICKY:
        text = json.dumps(value)
        in_browser = page.evaluate("text => AssayCanonical.canonicalize(JSON.parse(text))", text)
        assert in_browser.encode("utf-8") == canonical.canonical_json(value), value
    refused = page.evaluate(
        """() => ["\\ud800", NaN, Infinity].map(v => {
          try { AssayCanonical.canonicalize({v: v}); return false; } catch (e) { return true; }
        })"""
    )
    assert refused == [True, True, True]


def test_the_graph_loader_reads_both_schemas(open_page, live_server, personas, evidence_release):
    run = evidence_release.check_runs.get(required_check__key="circuit-v1")
    page = open_page("reviewer")
    page.goto(f"{live_server.url}/check-runs/{run.pk}/")
    page.locator(".graph-viewer[data-ready=assay-attribution-v1]").wait_for()
    for doc, schema, n_nodes in (
        (samples.circuit_tracer_graph(), "circuit-tracer", 11),
        (samples.assay_v1_graph(), "assay-attribution-v1", 9),
    ):
        model = page.evaluate(
            "doc => { const m = AssayGraph.load(doc); return {schema: m.schema, n: m.nodes.length,"
            " kinds: [...new Set(m.nodes.map(n => n.kind))].sort(), links: m.links.length}; }",
            doc,
        )
        assert model["schema"] == schema
        assert model["n"] == n_nodes
        assert model["kinds"] == ["error", "feature", "output", "token"]
    # Today's graph: a path from the first lens's feature through the second to the metric.
    page.locator('g.node[data-id="blocks.0.hook_resid_post/f7@3"]').click()
    assert page.locator("g.node.on").count() == 3


def test_the_ledger_checks_an_inclusion_proof_in_the_browser(
    open_page, live_server, personas, checked_release
):
    page = open_page("auditor")
    page.goto(f"{live_server.url}/ledger/")
    first = page.locator("button.verify").last  # the oldest event on the page
    seq = first.get_attribute("data-seq")
    first.click()
    result = page.locator(f"#verify-{seq}.ok")
    result.wait_for()
    assert "included in the ledger the server signed" in result.inner_text()
    shoot(page, "ledger-verified")


def test_the_check_matrix_updates_while_a_check_runs(
    open_page, live_server, personas, model_version, policy
):
    from audits import actions
    from interp_jobs.worker.tasks import run_check

    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    page = open_page("submitter")
    page.goto(f"{live_server.url}/releases/{release.pk}/")
    matrix = page.locator("#release-live")
    assert "queued" in matrix.inner_text()
    assert page.get_by_role("button", name="Cancel fingerprint").is_visible()
    run_check.apply(args=[str(release.check_runs.get().pk)])
    page.locator("#release-live .badge.verdict-pass").wait_for(timeout=15_000)
    assert "In review" in page.locator(".gate-state").inner_text()
    assert page.locator("#release-live[hx-get]").count() == 0  # stops polling once finished


def test_a_keyboard_reaches_the_sign_link_and_the_graph_nodes(
    open_page, live_server, personas, evidence_release
):
    page = open_page("reviewer")
    page.goto(f"{live_server.url}/releases/{evidence_release.pk}/")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "sign-link":
            break
    else:
        raise AssertionError("Tab never reached the sign link")
    run = evidence_release.check_runs.get(required_check__key="circuit")
    page.goto(f"{live_server.url}/check-runs/{run.pk}/")
    page.locator(".graph-viewer[data-ready=circuit-tracer]").wait_for()
    select = page.get_by_label("Select a node (keyboard)")
    select.focus()
    select.select_option("1_5_5")
    assert page.locator("g.node.on").count() == 2  # the feature and the output it feeds
    assert "Influence" in page.locator(".graph-details").inner_text()
    page.keyboard.press("Escape")
    assert page.locator("g.node.on").count() == 0


def test_an_admin_edits_a_draft_with_each_kinds_schema_at_hand(
    open_page, live_server, personas, policy
):
    from audits import actions
    from audits.models import CheckPolicy

    draft = actions.create_policy(
        actor=personas.admin,
        name="integrity",
        checks=[{"key": "fingerprint", "kind": "weights_fingerprint"}],
    )
    page = open_page("admin")
    page.on("dialog", lambda dialog: dialog.accept())
    page.goto(f"{live_server.url}/policies/{draft.pk}/")
    page.get_by_label("Key").nth(1).fill("discover")
    page.get_by_label("Kind").nth(1).select_option("feature_discovery")
    help_slot = page.locator("#checks-1-help")
    help_slot.get_by_text("contexts_per_feature").wait_for()  # swapped in by htmx
    page.get_by_label("Parameters (JSON object)").nth(1).fill('{"axis": "weapons", "top_m": 3}')
    page.get_by_role("button", name="Save the draft").click()
    assert "did you mean 'top_n'" in page.inner_text("main")
    shoot(page, "policy-editor-refused")
    page.get_by_label("Parameters (JSON object)").nth(1).fill('{"axis": "weapons", "top_n": 3}')
    page.get_by_role("button", name="Save the draft").click()
    page.get_by_text("check discover added").wait_for()
    page.get_by_role("button", name="Publish this version").click()
    page.get_by_text("is published").first.wait_for()
    shoot(page, "policy-published")
    assert CheckPolicy.objects.get(pk=draft.pk).is_published
