"""Debian's `chromium` driven by Playwright for Python, for the admin's browser tests.

Playwright's own browser downloads are not used. A test is skipped, saying why,
only where that browser or playwright is missing.
"""

import os

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Milliseconds Playwright waits for a page or an element.
BROWSER_TIMEOUT_MS = 30_000


def sync_playwright_or_skip():  # -> playwright's context manager factory, or a skip
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no browser: {CHROMIUM} is missing (.ci/run installs Debian's chromium with apt-get)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright cannot be imported ({exc}); it is pinned in requirements-dev.txt")
    return sync_playwright
