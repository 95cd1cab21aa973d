"""Driving Debian's Chromium with Playwright against pytest-django's live server.

Never downloads a browser: Chromium is /usr/bin/chromium (apt), and the tests that need it are
skipped, saying so, where it is absent. Screenshots are test artifacts, kept under
var/screenshots/ (git-ignored; ASSAY_SCREENSHOT_DIR moves them).
"""

import os
import re
from pathlib import Path

import pytest
from django.conf import settings

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="/usr/bin/chromium is not installed (apt-get install chromium); the browser tests "
    "never download a browser",
)


def screenshot_dir() -> Path:
    path = Path(
        os.environ.get("ASSAY_SCREENSHOT_DIR") or Path(settings.BASE_DIR) / "var" / "screenshots"
    )
    path.mkdir(parents=True, exist_ok=True)
    return path


def shoot(page, name: str, *, full_page: bool = True) -> Path:
    target = screenshot_dir() / f"{re.sub(r'[^a-z0-9-]+', '-', name.lower())}.png"
    page.screenshot(path=str(target), full_page=full_page)
    return target


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")


def password_of(username: str) -> str:
    """The personas' passwords (tests/conftest.py)."""
    return f"{username}-pw-123456"


def no_horizontal_overflow(page) -> bool:
    return page.evaluate("() => document.scrollingElement.scrollWidth <= window.innerWidth + 1")


def unlabelled_controls(page) -> list[str]:
    """Visible form controls without a label (or an accessible name, for buttons)."""
    return page.evaluate(
        """() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea, button')]
          .filter(e => e.offsetParent !== null)
          .filter(e => e.tagName === 'BUTTON'
            ? !(e.textContent.trim() || e.getAttribute('aria-label'))
            : !((e.labels && e.labels.length) || e.getAttribute('aria-label')))
          .map(e => e.outerHTML.slice(0, 160))"""
    )
