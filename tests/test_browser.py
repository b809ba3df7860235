"""End to end in a real browser: the example app, headless Chromium, the simulated phone.

What a person does: log in, open the protected page, press "Call me", answer the
simulated phone in a second tab, and land on the page they asked for. The wait
page's own JavaScript has to notice the confirmation (keypad style); in the
spoken style the person types the PIN the call read out.

Needs Debian's Chromium (/usr/bin/chromium) and the ``playwright`` package from
PyPI (its own browser download is never used). Without them the tests are
skipped, or fail when CI is set, so a CI machine cannot pass them silently.

Set PHONEVERIFY_SHOTS=/some/dir to save screenshots of every page the tests
see, at a desktop (1280x800) and a phone (375x812) size. Every page state is also
checked with axe-core (the ``axe.min.js`` bundled in the ``axe-playwright-python``
package, so nothing is downloaded at test time): no serious or critical violation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import chromium
from tests.loopback import serve

SIZES = {"desktop": (1280, 800), "phone": (375, 812)}
PHONE_WIDTH = SIZES["phone"][0]
SHOTS = os.environ.get("PHONEVERIFY_SHOTS")
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.launch() as b:
        yield b


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
        """Nothing sticks out sideways on a 375 px wide phone."""
        before = self.page.viewport_size
        self.page.set_viewport_size({"width": PHONE_WIDTH, "height": SIZES["phone"][1]})
        try:
            width = self.page.evaluate("document.scrollingElement.scrollWidth")
            assert width <= PHONE_WIDTH, f"{self.page.url} is {width} px wide on a phone"
        finally:
            self.page.set_viewport_size(before)

    def accessible(self) -> None:
        """axe-core finds no serious or critical violation on the page as it is now."""
        self.page.add_script_tag(content=axe_source())
        found = self.page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
            ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.html)}))"
        )
        bad = [v for v in found if v["impact"] in ("serious", "critical")]
        assert bad == [], f"axe on {self.name} ({self.page.url}): {bad}"

    def check(self, label: str) -> None:
        """A page state as a person meets it: axe-clean, fits a phone, photographed."""
        self.accessible()
        self.fits_a_phone()
        self.shot(label)

    def no_js_errors(self) -> None:
        assert self.errors == [], f"JavaScript errors on {self.name}: {self.errors}"


def axe_source() -> str:
    try:
        from importlib.resources import files

        return files("axe_playwright_python").joinpath("axe.min.js").read_text()
    except (ImportError, FileNotFoundError):
        chromium.missing("the Python package 'axe-playwright-python' (it bundles axe.min.js)")
        raise


def log_in(user: Watched, base: str, email: str, password: str) -> None:
    page = user.page
    page.goto(base + "/account")
    assert "/login" in page.url
    user.check("login")
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
        user.check("verify")

        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        pin = shown_pin(user)
        assert user.page.locator("#pv-message").inner_text() == "Calling your phone…"
        user.fits_a_phone()
        user.check("wait")

        phone = open_phone(context, base)
        call = newest_call(phone)
        assert call.locator(".pv-badge").first.inner_text() == "ringing"
        assert call.get_by_text("Incoming call").is_visible()
        phone.check("keypad-ringing")
        call.get_by_role("button", name="Answer").click()
        call = newest_call(phone)
        assert "key in the PIN shown on your screen" in call.locator(".pv-call-text").inner_text()
        phone.fits_a_phone()
        phone.check("keypad-answered")

        # The wait page follows the call by itself.
        user.page.locator("#pv-message", has_text="The call was answered.").wait_for()

        # A wrong PIN first: the phone says so, and the wait page stays put.
        call.get_by_label("Keypad").fill(other_pin(pin))
        call.get_by_role("button", name="Send keys").click()
        notice = phone.page.get_by_role("status")
        assert re.fullmatch(r"That PIN is not right\. \d tries left\.", notice.inner_text())
        phone.check("keypad-wrong-pin")
        assert user.page.url.endswith("/phoneverify/wait")

        newest_call(phone).get_by_label("Keypad").fill(pin)
        newest_call(phone).get_by_role("button", name="Send keys").click()
        assert phone.page.get_by_role("status").inner_text() == "Thank you. You are confirmed."
        assert newest_call(phone).locator(".pv-badge").first.inner_text() == "ended"
        phone.check("keypad-confirmed")

        # No click on the wait page: its script sees "verified" and moves on.
        user.page.wait_for_url(re.compile(r"/account$"))
        assert user.page.get_by_role("heading", name="Your account").is_visible()
        assert "+12015550123 is confirmed" in user.page.inner_text("main")
        user.check("account")
        user.no_js_errors()
        phone.no_js_errors()


def test_spoken_pin_typed_on_the_page_with_a_wrong_try_first(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path, PHONEVERIFY_STYLE="spoken") as base:
        user = Watched(context.new_page(), "spoken")
        log_in(user, base, "demo@example.com", "demo")
        assert "read you a PIN" in user.page.locator(".pv-lead").inner_text()
        user.check("verify")

        user.page.get_by_role("button", name="Call me").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert user.page.locator(".pv-pin").count() == 0  # the page never shows a spoken PIN
        pin_box = user.page.get_by_label("PIN from the call")
        assert pin_box.is_visible()
        user.check("wait")

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
        phone.check("spoken-answered")
        user.page.locator("#pv-message", has_text="The call has delivered the code.").wait_for()

        # A wrong PIN: a readable error, the form is still there.
        pin_box.fill(other_pin(spoken))
        user.page.get_by_role("button", name="Confirm").click()
        error = user.page.get_by_role("alert")
        error.wait_for()
        said = re.fullmatch(r"That PIN is not right\. (\d) tries left\.", error.inner_text())
        assert said, error.inner_text()
        assert user.page.locator(".pv-hint").count() == 0  # said once, in the alert
        user.check("wrong-pin")

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
        user.check("verify")

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
        user.check("wait")
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
        # Post/Redirect/Get: back on the verify page, the error said once, "Call me" at hand
        user.page.get_by_role("alert").wait_for()
        assert response_status == [303]
        assert (
            user.page.get_by_role("alert").inner_text()
            == "The phone service is not answering right now. Please try again in a moment."
        )
        assert user.page.get_by_role("heading", name="Confirm it's you").is_visible()
        assert user.page.evaluate("document.activeElement.id") == "pv-error"
        user.check("page")
        user.page.reload()
        assert user.page.get_by_role("alert").count() == 0
        assert user.page.get_by_role("button", name="Call me").is_enabled()
        user.no_js_errors()


def test_built_in_layout_puts_the_development_note_above_the_card(
    context: Any, tmp_path: Path
) -> None:
    # No PHONEVERIFY_BASE_TEMPLATE: the extension's own layout, as in the README quickstart.
    with example_app(tmp_path, PHONEVERIFY_BASE_TEMPLATE=None) as base:
        user = Watched(context.new_page(), "standalone")
        log_in(user, base, "demo@example.com", "demo")
        user.check("verify")
        for size in SIZES.values():
            user.page.set_viewport_size({"width": size[0], "height": size[1]})
            note = user.page.locator(".pv-devnote").bounding_box()
            card = user.page.locator(".pv-card").bounding_box()
            assert note and card
            assert note["y"] + note["height"] <= card["y"], (size, note, card)
            assert abs(note["width"] - card["width"]) <= 1, (size, note, card)


# -- pages that never strand anyone ----------------------------------------------------------


def call_me(user: Watched) -> None:
    user.page.get_by_role("button", name="Call me").click()
    user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))


def test_wrong_pin_reload_costs_no_try_and_focus_lands_on_the_field(
    context: Any, tmp_path: Path
) -> None:
    with example_app(tmp_path, PHONEVERIFY_STYLE="spoken") as base:
        user = Watched(context.new_page(), "prg")
        log_in(user, base, "demo@example.com", "demo")
        call_me(user)
        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Answer").click()
        spoken = hear_the_code(phone)
        phone.check("spoken-answered")

        user.page.get_by_label("PIN from the call").fill(other_pin(spoken))
        user.page.get_by_role("button", name="Confirm").click()
        user.page.get_by_role("alert").wait_for()
        assert user.page.url.endswith("/phoneverify/wait")  # redirected, not rendered by POST
        field = user.page.get_by_label("PIN from the call")
        assert field.get_attribute("aria-invalid") == "true"
        assert field.get_attribute("aria-describedby") == "pv-error"
        assert user.page.evaluate("document.activeElement.id") == "pv-pin-input"
        user.check("wrong-pin")
        user.page.reload()  # a reload sends a GET: no try is spent, the error is gone
        assert user.page.get_by_role("alert").count() == 0
        user.page.get_by_label("PIN from the call").fill(other_pin(spoken))
        user.page.get_by_role("button", name="Confirm").click()
        assert "3 tries left" in user.page.get_by_role("alert").inner_text()

        # Arabic-Indic digits are digits
        user.page.get_by_label("PIN from the call").fill(spoken.translate(ARABIC_INDIC))
        user.page.get_by_role("button", name="Confirm").click()
        user.page.wait_for_url(re.compile(r"/account$"))

        # Back to the verify page: already confirmed, no second call offered
        user.page.goto(base + "/phoneverify/?next=/account")
        assert user.page.get_by_role("heading", name="Your phone is confirmed").is_visible()
        assert user.page.get_by_role("button", name="Call me").count() == 0
        user.check("already-confirmed")
        user.page.get_by_role("link", name="Continue").click()
        user.page.wait_for_url(re.compile(r"/account$"))
        user.no_js_errors()
        phone.no_js_errors()


ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def hear_the_code(phone: Watched) -> str:
    """Voicemail-safe spoken call: press the digit it asks for, read the code it says."""
    prompt = newest_call(phone).locator(".pv-call-text").inner_text()
    asked = re.search(r"To hear your code, press (\d)\.", prompt)
    assert asked, prompt
    newest_call(phone).get_by_label("Keypad").fill(asked.group(1))
    newest_call(phone).get_by_role("button", name="Send keys").click()
    return str(newest_call(phone).locator(".pv-pin-inline").inner_text().strip())


def test_resend_counts_down_then_announces_a_new_pin(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path, PHONEVERIFY_NUMBER_COOLDOWN=4) as base:
        user = Watched(context.new_page(), "resend")
        log_in(user, base, "demo@example.com", "demo")
        call_me(user)
        first = shown_pin(user)
        again = user.page.locator("#pv-resend")
        assert again.is_disabled() and re.fullmatch(
            r"Call me again \(in [1-4] s\)", again.inner_text()
        )
        user.check("wait-countdown")
        user.page.wait_for_function("!document.getElementById('pv-resend').disabled")
        assert again.inner_text() == "Call me again"
        again.click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        notice = user.page.locator("#pv-notice")
        assert "new PIN" in notice.inner_text() and notice.get_attribute("role") == "status"
        assert "Your new PIN." in user.page.locator("#pv-pin-label").inner_text()
        assert len(shown_pin(user)) == len(first)
        assert again.is_disabled()  # the cool-down started again with the new call
        user.check("wait-new-pin")

        # pressed too soon anyway (a second tab): refused, still on the wait page
        with user.page.expect_navigation():  # enabled and pressed in one go: the countdown
            user.page.evaluate(  # would otherwise disable it again before a click lands
                "const b = document.getElementById('pv-resend'); b.disabled = false; b.click()"
            )
        user.page.get_by_role("alert").wait_for()
        assert user.page.url.endswith("/phoneverify/wait")
        assert "A call was just made" in user.page.get_by_role("alert").inner_text()
        assert user.page.locator("#pv-resend").is_disabled()
        assert user.page.get_by_role("heading", name="Answer your phone").is_visible()
        user.check("wait-resend-refused")

        # Cancel hangs up the simulated call
        phone = open_phone(context, base)
        assert newest_call(phone).locator(".pv-badge").first.inner_text() == "ringing"
        phone.check("ringing")
        user.page.get_by_role("button", name="Cancel").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/(\?.*)?$"))
        phone.page.reload()
        assert newest_call(phone).locator(".pv-badge").first.inner_text() == "ended"
        phone.check("ended-after-cancel")
        user.no_js_errors()


def test_expiry_turns_the_open_wait_page_into_the_expired_state(
    context: Any, tmp_path: Path
) -> None:
    # The shortest lifetime allowed; the page is left open and follows it by itself.
    with example_app(tmp_path, PHONEVERIFY_STYLE="spoken", PHONEVERIFY_TTL=30) as base:
        user = Watched(context.new_page(), "expiry")
        log_in(user, base, "demo@example.com", "demo")
        call_me(user)
        user.page.get_by_role("heading", name="This verification has expired").wait_for(
            timeout=45_000
        )
        assert not user.page.get_by_label("PIN from the call").is_visible()
        assert user.page.get_by_role("button", name="Start again").is_visible()
        assert not user.page.get_by_role("button", name="Call me again").is_visible()
        assert "pv-error" in (user.page.locator("#pv-message").get_attribute("class") or "")
        assert user.page.title().startswith("This verification has expired")
        user.check("expired-live")
        user.page.reload()  # the server says the same
        assert user.page.get_by_role("heading", name="This verification has expired").is_visible()
        assert user.page.get_by_label("PIN from the call").count() == 0
        user.check("expired")
        user.page.get_by_role("button", name="Start again").click()
        user.page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert user.page.get_by_label("PIN from the call").is_visible()
        user.no_js_errors()


def test_locked_and_enrolment_errors_and_the_standalone_states_pass_axe(
    context: Any, tmp_path: Path
) -> None:
    with example_app(tmp_path, PHONEVERIFY_MAX_ATTEMPTS=1) as base:
        user = Watched(context.new_page(), "states")
        log_in(user, base, "new@example.com", "new")
        number = user.page.get_by_role("textbox", name="Phone number")
        number.fill("not a number")
        call_me_button = user.page.get_by_role("button", name="Call me")
        call_me_button.click()
        user.page.get_by_role("alert").wait_for()
        assert number.get_attribute("aria-invalid") == "true"
        assert "pv-error" in (number.get_attribute("aria-describedby") or "")
        assert number.input_value() == "not a number"
        assert user.page.evaluate("document.activeElement.id") == "pv-phone"
        user.check("enrol-error")
        number.fill("+1 201 555 0199")
        call_me(user)
        pin = shown_pin(user)
        user.check("wait-keypad")

        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Answer").click()
        phone.check("keypad-answered")
        newest_call(phone).get_by_label("Keypad").fill(other_pin(pin))
        newest_call(phone).get_by_role("button", name="Send keys").click()
        assert newest_call(phone).locator(".pv-badge").first.inner_text() == "ended"
        assert newest_call(phone).get_by_label("Keypad").count() == 0
        phone.check("locked-call-ended")

        user.page.get_by_role("heading", name="Too many wrong PINs").wait_for()
        assert "pv-error" in (user.page.locator("#pv-message").get_attribute("class") or "")
        user.check("locked")
        user.page.reload()
        assert user.page.get_by_role("heading", name="Too many wrong PINs").is_visible()
        user.check("locked-reloaded")
        user.no_js_errors()
        phone.no_js_errors()

        empty = Watched(context.browser.new_context().new_page(), "devphone-visitor")
        empty.page.goto(base + "/phoneverify/dev/phone")
        empty.check("empty")
        empty.page.context.close()


def test_declined_call_is_said_in_the_error_style(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path, PHONEVERIFY_BASE_TEMPLATE=None) as base:
        user = Watched(context.new_page(), "standalone-declined")
        log_in(user, base, "demo@example.com", "demo")
        assert user.page.title() == "Confirm your phone · Example Bank"
        call_me(user)
        phone = open_phone(context, base)
        newest_call(phone).get_by_role("button", name="Decline").click()
        user.page.locator("#pv-message.pv-error", has_text="The call was declined.").wait_for()
        user.check("declined")
        user.page.reload()
        assert "pv-error" in (user.page.locator("#pv-message").get_attribute("class") or "")
        assert user.page.title().startswith("The call did not go through")
        user.check("declined-reloaded")
        user.no_js_errors()


def test_message_pages_pass_axe_and_lead_somewhere(context: Any, tmp_path: Path) -> None:
    with example_app(tmp_path, PHONEVERIFY_ALLOW_ENROLMENT=False) as base:
        user = Watched(context.new_page(), "message")
        page = user.page
        page.goto(base + "/account")
        page.fill("#email", "new@example.com")
        page.fill("#password", "new")
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="No phone number on file").wait_for()
        user.check("no-phone")
        page.get_by_role("button", name="Log out").click()

        log_in(user, base, "demo@example.com", "demo")
        # a stale form (its CSRF token no longer this session's): 400, said plainly
        call_me = page.get_by_role("button", name="Call me")
        call_me.evaluate("b => { b.form.elements.csrf_token.value = 'stale' }")
        call_me.click()
        page.get_by_role("alert").wait_for()
        assert "security token" in page.get_by_role("alert").inner_text()
        user.check("csrf")
        page.get_by_role("link", name="Try again").click()
        page.get_by_role("heading", name="Confirm it's you").wait_for()
        user.no_js_errors()
