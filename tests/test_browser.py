"""End to end in a real browser: the example app, headless Chromium, the simulated phone.

What a person does: log in, open the protected page, press "Call me", answer the
simulated phone in a second tab, and land on the page they asked for. The wait
page's own JavaScript has to notice the confirmation (keypad style); in the
spoken style the person types the PIN the call read out.

Needs Debian's Chromium (/usr/bin/chromium) and the ``playwright`` package from
PyPI (its own browser download is never used). Without them the tests are
skipped, or fail when CI is set, so a CI machine cannot pass them silently.

Set PHONEVERIFY_SHOTS=/some/dir to save screenshots of every page the tests
see, at a desktop (1280x800) and a phone (390x844) size.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.loopback import serve

CHROMIUM = os.environ.get("PHONEVERIFY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
SHOTS = os.environ.get("PHONEVERIFY_SHOTS")
TIMEOUT_MS = 10_000


def _missing(what: str) -> None:
    message = (
        f"browser tests need {what}; install it with "
        "'apt-get install -y chromium' and 'pip install playwright' "
        "(never 'playwright install')"
    )
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the Python package 'playwright'")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        _missing(f"Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def make_example_app(tmp_path: Path, **config: Any) -> Any:
    from example_app import create_app

    return create_app(
        {
            "TESTING": True,
            "PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/pv.sqlite3",
            "PHONEVERIFY_NUMBER_COOLDOWN": 0,
            **config,
        }
    )


@contextmanager
def example_app(tmp_path: Path, **config: Any) -> Iterator[str]:
    """The example app, served on 127.0.0.1; yields its base URL."""
    with serve(make_example_app(tmp_path, **config)) as base:
        yield base


class Watched:
    """A page whose JavaScript errors are collected, with screenshots on request."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.name = name
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, label: str) -> None:
        if not SHOTS:
            return
        out = Path(SHOTS)
        out.mkdir(parents=True, exist_ok=True)
        before = self.page.viewport_size
        for size, (w, h) in SIZES.items():
            self.page.set_viewport_size({"width": w, "height": h})
            self.page.screenshot(path=str(out / f"{self.name}-{label}-{size}.png"), full_page=True)
        self.page.set_viewport_size(before)

    def fits_a_phone(self) -> None:
        """Nothing sticks out sideways on a 390 px wide phone."""
        before = self.page.viewport_size
        self.page.set_viewport_size({"width": 390, "height": 844})
        try:
            width = self.page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= 390, f"{self.page.url} is {width} px wide on a 390 px phone"
        finally:
            self.page.set_viewport_size(before)

    def no_js_errors(self) -> None:
        assert self.errors == [], f"JavaScript errors on {self.name}: {self.errors}"


def log_in(user: Watched, base: str, email: str, password: str) -> None:
    page = user.page
    page.goto(base + "/account")
    assert "/login" in page.url
    user.shot("login")
    page.fill("#email", email)
    page.fill("#password", password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/phoneverify/\?next=(%2F|/)account$"))
    heading = "Add your phone number" if email.startswith("new@") else "Confirm it's you"
    assert page.get_by_role("heading", name=heading).is_visible()


def open_phone(context: Any, base: str) -> Watched:
    phone = Watched(context.new_page(), "devphone")
    phone.page.goto(base + "/phoneverify/dev/phone")
    return phone


def newest_call(phone: Watched) -> Any:
    return phone.page.locator("article.pv-call").first


def shown_pin(user: Watched) -> str:
    digits = user.page.locator(".pv-pin span").all_inner_texts()
    pin = "".join(d.strip() for d in digits)
    assert re.fullmatch(r"\d{6,12}", pin), digits
    return pin


def other_pin(pin: str) -> str:
    return "".join(str((int(d) + 1) % 10) for d in pin)


def test_keypad_call_confirms_and_the_wait_page_moves_on(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path) as base:
        user = Watched(context.new_page(), "keypad")
        log_in(user, base, "demo@example.com", "demo")
        assert user.page.locator(".pv-number").inner_text() == "+1******0123"
        user.fits_a_phone()
        user.shot("verify")

        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        pin = shown_pin(user)
        assert user.page.locator("#pv-message").inner_text() == "Calling your phone…"
        user.fits_a_phone()
        user.shot("wait")

        phone = open_phone(context, base)
        call = newest_call(phone)
        assert call.locator(".pv-badge").first.inner_text() == "ringing"
        assert call.get_by_text("Incoming call").is_visible()
        phone.shot("keypad-ringing")
        call.get_by_role("button", name="Answer").click()
        call = newest_call(phone)
        assert "key in the PIN shown on your screen" in call.locator(".pv-call-text").inner_text()
        phone.fits_a_phone()
        phone.shot("keypad-answered")

        # The wait page follows the call by itself.
        user.page.locator("#pv-message", has_text="The call was answered.").wait_for()

        # A wrong PIN first: the phone says so, and the wait page stays put.
        call.get_by_label("Keypad").fill(other_pin(pin))
        call.get_by_role("button", name="Send keys").click()
        notice = phone.page.get_by_role("status")
        assert re.fullmatch(r"That PIN is not right\. \d tries left\.", notice.inner_text())
        phone.shot("keypad-wrong-pin")
        assert user.page.url.endswith("/phoneverify/wait")

        newest_call(phone).get_by_label("Keypad").fill(pin)
        newest_call(phone).get_by_role("button", name="Send keys").click()
        assert phone.page.get_by_role("status").inner_text() == "Thank you. You are confirmed."
        assert newest_call(phone).locator(".pv-badge").first.inner_text() == "ended"
        phone.shot("keypad-confirmed")

        # No click on the wait page: its script sees "verified" and moves on.
        user.page.wait_for_url(re.compile(r"/account$"))
        assert user.page.get_by_role("heading", name="Your account").is_visible()
        assert "+12015550123 is confirmed" in user.page.inner_text("main")
        user.shot("account")
        user.no_js_errors()
        phone.no_js_errors()


def test_spoken_pin_typed_on_the_page_with_a_wrong_try_first(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path, PHONEVERIFY_STYLE="spoken") as base:
        user = Watched(context.new_page(), "spoken")
        log_in(user, base, "demo@example.com", "demo")
        assert "read you a PIN" in user.page.locator(".pv-lead").inner_text()
        user.shot("verify")

        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert user.page.locator(".pv-pin").count() == 0  # the page never shows a spoken PIN
        pin_box = user.page.get_by_label("PIN from the call")
        assert pin_box.is_visible()
        user.shot("wait")

        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Answer").click()
        # voicemail-safe: the call asks for one digit, and says the code only after it
        prompt = newest_call(phone).locator(".pv-call-text").inner_text()
        asked = re.search(r"To hear your code, press (\d)\.", prompt)
        assert asked, prompt
        assert newest_call(phone).locator(".pv-pin-inline").count() == 0
        newest_call(phone).get_by_label("Keypad").fill(asked.group(1))
        newest_call(phone).get_by_role("button", name="Send keys").click()
        spoken = newest_call(phone).locator(".pv-pin-inline").inner_text().strip()
        assert re.fullmatch(r"\d{6,12}", spoken)
        phone.fits_a_phone()
        text = newest_call(phone).locator(".pv-call-text").inner_text()
        assert " ".join(spoken) in text
        phone.shot("spoken-answered")
        user.page.locator("#pv-message", has_text="The call has delivered the code.").wait_for()

        # A wrong PIN: a readable error, the form is still there.
        pin_box.fill(other_pin(spoken))
        user.page.get_by_role("button", name="Confirm").click()
        error = user.page.get_by_role("alert")
        error.wait_for()
        said = re.fullmatch(r"That PIN is not right\. (\d) tries left\.", error.inner_text())
        assert said, error.inner_text()
        assert user.page.locator(".pv-hint").count() == 0  # said once, in the alert
        user.shot("wrong-pin")

        # The right one, typed the way people type what they hear.
        user.page.get_by_label("PIN from the call").fill(" ".join(spoken))
        user.page.get_by_role("button", name="Confirm").click()
        user.page.wait_for_url(re.compile(r"/account$"))
        assert user.page.get_by_role("heading", name="Your account").is_visible()
        user.no_js_errors()
        phone.no_js_errors()


def test_new_user_enters_a_number_and_keeps_it_once_confirmed(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path) as base:
        user = Watched(context.new_page(), "enrol")
        log_in(user, base, "new@example.com", "new")
        number = user.page.get_by_role("textbox", name="Phone number")
        assert number.is_visible()
        user.shot("verify")

        number.fill("201 555 0199")
        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert user.page.locator(".pv-number").inner_text() == "+1******0199"
        pin = shown_pin(user)

        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Answer").click()
        newest_call(phone).get_by_label("Keypad").fill(pin)
        newest_call(phone).get_by_role("button", name="Send keys").click()

        user.page.wait_for_url(re.compile(r"/account$"))
        assert "+12015550199 is confirmed" in user.page.inner_text("main")
        user.no_js_errors()


def test_declined_call_offers_a_fresh_start(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path) as base:
        user = Watched(context.new_page(), "declined")
        log_in(user, base, "demo@example.com", "demo")
        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        start_again = user.page.get_by_role("button", name="Start again")
        assert not start_again.is_visible()

        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Decline").click()

        user.page.locator("#pv-message", has_text="The call was declined.").wait_for()
        start_again.wait_for()
        assert not user.page.locator(".pv-pin").is_visible()
        user.shot("wait")
        start_again.click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert user.page.locator("#pv-message").inner_text() == "Calling your phone…"
        user.no_js_errors()


def test_provider_failure_shows_a_readable_page(context: Any, tmp_path: Path) -> None:
    from flask_phoneverify.errors import ProviderUnavailable
    from flask_phoneverify.extension import state

    app = make_example_app(tmp_path)

    def ring(*_: Any, **__: Any) -> Any:  # the simulated phone's network is down
        raise ProviderUnavailable(detail="test: connection refused")

    with app.app_context():
        state().provider.ring = ring  # type: ignore[method-assign]

    with serve(app) as base:
        user = Watched(context.new_page(), "provider-error")
        log_in(user, base, "demo@example.com", "demo")
        response_status: list[int] = []
        user.page.on(
            "response",
            lambda r: response_status.append(r.status) if r.url.endswith("/start") else None,
        )
        user.page.get_by_role("button", name="Call me").click()
        user.page.get_by_role("heading", name="The call did not go through").wait_for()
        assert response_status == [503]
        assert (
            user.page.get_by_role("alert").inner_text()
            == "The phone service is not answering right now. Please try again in a moment."
        )
        user.shot("page")
        user.page.get_by_role("link", name="Try again").click()
        user.page.get_by_role("heading", name="Confirm it's you").wait_for()
        user.no_js_errors()


def test_built_in_layout_puts_the_development_note_above_the_card(
    context: Any, tmp_path: Path
) -> None:
    # No PHONEVERIFY_BASE_TEMPLATE: the extension's own layout, as in the README quickstart.
    with example_app(tmp_path, PHONEVERIFY_BASE_TEMPLATE=None) as base:
        user = Watched(context.new_page(), "standalone")
        log_in(user, base, "demo@example.com", "demo")
        user.shot("verify")
        for size in SIZES.values():
            user.page.set_viewport_size({"width": size[0], "height": size[1]})
            note = user.page.locator(".pv-devnote").bounding_box()
            card = user.page.locator(".pv-card").bounding_box()
            assert note and card
            assert note["y"] + note["height"] <= card["y"], (size, note, card)
            assert abs(note["width"] - card["width"]) <= 1, (size, note, card)
