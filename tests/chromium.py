"""Headless Debian Chromium for the browser tests, launched one way for all of them.

Playwright drives ``/usr/bin/chromium`` (its own browser download is never used).
The flags keep Chromium off the network: without them it tries Google's hosts at
start and on downloads, which a closed machine refuses or leaves hanging.
Without Chromium or Playwright the tests are skipped, or fail when CI is set, so a
CI machine cannot pass them silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

CHROMIUM = os.environ.get("PHONEVERIFY_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(what: str) -> NoReturn:
    """Skip (fail under CI) for lack of ``what``."""
    message = (
        f"browser tests need {what}; install it with "
        "'apt-get install -y chromium' and 'pip install playwright' "
        "(never 'playwright install')"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextmanager
def launch() -> Iterator[Any]:
    """A headless Chromium browser, closed when the block ends."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the Python package 'playwright'")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        missing(f"Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
