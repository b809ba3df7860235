"""The pages in French in a real browser (headless Chromium, the example app): what the
server writes and what the wait page's script writes as the call moves on, in the
language the browser asks for; axe-core finds nothing serious on the French pages.

Needs Debian's Chromium and the ``playwright`` and ``axe-playwright-python`` packages,
like tests/test_browser.py (skipped without them, failing when CI is set)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import chromium
from tests.loopback import serve


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.launch() as b:
        yield b


def axe_violations(page: Any) -> list[Any]:
    try:
        from importlib.resources import files

        source = files("axe_playwright_python").joinpath("axe.min.js").read_text()
    except (ImportError, FileNotFoundError):
        chromium.missing("the Python package 'axe-playwright-python'")
        raise
    page.add_script_tag(content=source)
    found: list[Any] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact}))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def test_a_french_browser_gets_french_pages_and_live_updates(browser: Any, tmp_path: Path) -> None:
    from example_app import create_app

    app = create_app(
        {
            "TESTING": True,
            "PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/pv.sqlite3",
            "PHONEVERIFY_NUMBER_COOLDOWN": 0,
            "PHONEVERIFY_BASE_TEMPLATE": None,  # the extension's own layout and <html lang>
        }
    )
    context = browser.new_context(locale="fr-FR", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    errors: list[str] = []
    try:
        with serve(app) as base:
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/account")
            page.fill("#email", "demo@example.com")
            page.fill("#password", "demo")
            page.get_by_role("button", name="Log in").click()
            page.wait_for_url(re.compile(r"/phoneverify/"))
            assert page.get_attribute("html", "lang") == "fr"
            assert page.get_by_role("heading", name="Confirmez que c’est bien vous").is_visible()
            assert axe_violations(page) == []

            page.get_by_role("button", name="Appelez-moi").click()
            page.wait_for_url(re.compile(r"/phoneverify/wait$"))
            assert page.locator("#pv-message").inner_text() == "Appel de votre téléphone…"
            assert page.get_by_role("heading", name="Répondez au téléphone").is_visible()
            assert axe_violations(page) == []

            phone = context.new_page()
            phone.goto(base + "/phoneverify/dev/phone")
            call = phone.locator("article.pv-call").first
            assert call.get_by_text("Appel entrant…").is_visible()
            call.get_by_role("button", name="Refuser").click()

            # the wait page's own script follows the call, in French
            page.locator("#pv-message", has_text="L’appel a été refusé.").wait_for()
            page.get_by_role("heading", name="L’appel n’a pas abouti").wait_for()
            assert page.get_by_role("button", name="Recommencer").is_visible()
            assert axe_violations(page) == []
            assert errors == []
    finally:
        context.close()
