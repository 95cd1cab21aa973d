"""Fixtures of the UI tests: releases whose checks ran (the tiny model's real fingerprint, and
sample evidence for every viewer), and a signed-in test client per persona."""

import pytest
from django.test import Client

from audits import actions
from interp_jobs.worker.tasks import run_check
from tests.web import samples


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: drives a real Chromium (Playwright) against a live server"
    )


def checked(release):
    for run in release.check_runs.filter(kind="weights_fingerprint"):
        run_check.apply(args=[str(run.pk)])
    release.refresh_from_db()
    return release


@pytest.fixture
def checked_release(personas, model_version, policy):
    """Under the `integrity` policy (the tiny model's fingerprint): its check passed."""
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    return checked(release)


@pytest.fixture
def evidence_release(personas, model_version):
    """Under a policy with every viewer's kind: fingerprint run for real, the others recorded
    with sample evidence through the worker's actions."""
    samples.evidence_policy(personas.admin)
    release, _ = actions.open_release(actor=personas.submitter, model_version=model_version)
    samples.record_synthetic_runs(release)
    samples.propose_catalog(release, personas.admin)
    return checked(release)


@pytest.fixture
def as_user(personas):
    """as_user(name) -> a Django test client signed in as that persona (CSRF enforced)."""

    def make(name: str) -> Client:
        client = Client(enforce_csrf_checks=True)
        client.force_login(getattr(personas, name))
        return client

    return make


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium under Playwright, started once for the session."""
    from tests.web.browser import ARGS, CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed; the browser tests never download one")
    import os

    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls
    # (fixtures, assertions) are still synchronous, which Django must be told.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def open_page(chromium, live_server):
    """open_page(username, viewport=WIDE) -> a page signed in through the login form. Every
    page the test opens is checked for script errors and content-security violations."""
    from tests.web.browser import WIDE, log_in, password_of

    contexts, problems = [], []

    def make(username: str | None, viewport=WIDE):
        context = chromium.new_context(viewport=viewport)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"{username}: script error {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"{username}: console {msg.type}: {msg.text}")
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        if username is not None:
            log_in(page, live_server.url, username, password_of(username))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, problems
