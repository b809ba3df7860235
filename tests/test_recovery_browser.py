"""The way back and a remembered device, in a real browser on the example app.

Generate recovery codes, lose the phone (log out), log in with a recovery code,
confirm a new number by a call to it; and "Remember this device", which skips the
call at the next login but not for a step-up page. Every page of these features is
checked for what assistive technology needs (a language, one heading, a name for
every control, errors announced and tied to their field) and for a phone's width.

Needs Debian's Chromium and the ``playwright`` package, like ``tests/test_browser.py``
(skipped without them, failed when CI is set).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests import chromium
from tests.loopback import serve

CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{2}$")

#: what a page must hold for assistive technology, checked in the page itself
A11Y_CHECK = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("no lang on <html>");
  if (!document.title.trim()) problems.push("no title");
  const h1 = [...document.querySelectorAll("h1")].filter(e => e.offsetParent !== null);
  if (h1.length !== 1) problems.push(`${h1.length} visible h1`);
  for (const el of document.querySelectorAll("input, select, textarea")) {
    if (el.type === "hidden") continue;
    const labelled = (el.id && document.querySelector(`label[for="${el.id}"]`))
      || el.closest("label") || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby");
    if (!labelled) problems.push(`unlabelled ${el.outerHTML.slice(0, 60)}`);
    for (const id of (el.getAttribute("aria-describedby") || "").split(/\\s+/).filter(Boolean)) {
      if (!document.getElementById(id)) problems.push(`aria-describedby names missing #${id}`);
    }
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (el.offsetParent === null) continue;
    if (!(el.innerText || el.getAttribute("aria-label") || "").trim()) {
      problems.push(`nameless ${el.outerHTML.slice(0, 60)}`);
    }
  }
  for (const el of document.querySelectorAll(".pv-error")) {
    if (el.getAttribute("role") !== "alert") problems.push("an error without role=alert");
  }
  const ids = [...document.querySelectorAll("[id]")].map(e => e.id);
  if (new Set(ids).size !== ids.length) problems.push("duplicate ids");
  return problems;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium.launch() as b:
        yield b


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(10_000)
    try:
        yield ctx
    finally:
        ctx.close()


def example(tmp_path: Path, **config: Any) -> Any:
    from example_app import create_app

    return create_app(
        {
            "TESTING": True,
            "PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/pv.sqlite3",
            "PHONEVERIFY_NUMBER_COOLDOWN": 0,
            **config,
        },
        instance_path=str(tmp_path / "instance"),
    )


SHOTS = os.environ.get("PHONEVERIFY_SHOTS")


def shot(page: Any, label: str) -> None:
    """With PHONEVERIFY_SHOTS=dir, screenshots at a desktop and a phone width."""
    if not SHOTS:
        return
    Path(SHOTS).mkdir(parents=True, exist_ok=True)
    before = page.viewport_size
    for size, (w, h) in {"desktop": (1280, 800), "phone": (375, 812)}.items():
        page.set_viewport_size({"width": w, "height": h})
        page.screenshot(path=f"{SHOTS}/trust-{label}-{size}.png", full_page=True)
    page.set_viewport_size(before)


def checked(page: Any, label: str = "") -> None:
    """The page passes the accessibility checks and fits a 390 px phone."""
    if label:
        shot(page, label)
    problems = page.evaluate(A11Y_CHECK)
    assert problems == [], f"{page.url}: {problems}"
    before = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        width = page.evaluate("document.scrollingElement.scrollWidth")
        assert width <= 390, f"{page.url} is {width} px wide on a 390 px phone"
    finally:
        page.set_viewport_size(before)


def log_in(page: Any, base: str) -> None:
    page.goto(base + "/login")
    page.fill("#email", "demo@example.com")
    page.fill("#password", "demo")
    page.get_by_role("button", name="Log in").click()


def log_out(page: Any) -> None:
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/$"))


def answer_and_key_in(context: Any, base: str, pin: str) -> None:
    phone = context.new_page()
    phone.goto(base + "/phoneverify/dev/phone")
    call = phone.locator("article.pv-call").first
    call.get_by_role("button", name="Answer").click()
    call = phone.locator("article.pv-call").first
    call.get_by_label("Keypad").fill(pin)
    call.get_by_role("button", name="Send keys").click()
    # left open: Page.close has no time limit and can wait forever on a page that
    # is still navigating; the context closes it at the end of the test


def shown_pin(page: Any) -> str:
    return "".join(d.strip() for d in page.locator(".pv-pin span").all_inner_texts())


def confirm_by_phone(context: Any, page: Any, base: str, *, remember: bool = False) -> None:
    """From the verify page: "Call me", answer, key the PIN in; the page moves on."""
    page.get_by_role("button", name="Call me").click()
    page.wait_for_url(re.compile(r"/phoneverify/wait$"))
    if remember:
        box = page.get_by_label(re.compile("Remember this device"))
        checked(page, "wait-remember")
        box.check()
    answer_and_key_in(context, base, shown_pin(page))


def test_the_whole_way_back_with_a_recovery_code(context: Any, tmp_path: Path) -> None:
    errors: list[str] = []
    with serve(example(tmp_path)) as base:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        log_in(page, base)
        page.wait_for_url(re.compile(r"/phoneverify/\?next="))
        confirm_by_phone(context, page, base)
        page.wait_for_url(re.compile(r"/account$"))
        assert "no recovery codes yet" in page.inner_text("main")

        # 1. Generate codes: shown once, with copy and download.
        page.get_by_role("link", name="Recovery codes").click()
        page.get_by_role("heading", name="Recovery codes").wait_for()
        checked(page, "codes-intro")
        page.get_by_role("button", name="Generate codes").click()
        page.get_by_role("heading", name="Your new recovery codes").wait_for()
        codes = [c.strip() for c in page.locator("#pv-codes code").all_inner_texts()]
        assert len(codes) == 10 and all(CODE.match(c) for c in codes)
        assert page.get_by_role("button", name="Copy the codes").is_visible()
        link = page.get_by_role("link", name="Download as a text file")
        with page.expect_download() as download:
            link.click()
        # the browser takes it as a file download; its text is the link's own data:
        # URL (waiting for the saved file has no time limit in Playwright)
        assert download.value.suggested_filename == "recovery-codes.txt"
        href = link.get_attribute("href") or ""
        assert href.startswith("data:text/plain;charset=utf-8,")
        assert unquote(href.split(",", 1)[1]).split() == codes
        checked(page, "codes-shown")
        page.get_by_role("link", name="I have saved them").click()
        page.wait_for_url(re.compile(r"/account$"))
        assert "10 unused recovery codes" in page.inner_text("main")

        # 2. The phone is lost: log out, log in, use a code (a wrong one first).
        log_out(page)
        log_in(page, base)
        page.wait_for_url(re.compile(r"/phoneverify/\?next="))
        page.get_by_role("link", name="Use a recovery code").click()
        page.get_by_role("heading", name="Use a recovery code").wait_for()
        checked(page, "recover")
        field = page.get_by_role("textbox", name="Recovery code")
        field.fill("ABCD-EFGH-JK")
        page.get_by_role("button", name="Use this code").click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert "not valid" in alert.inner_text()
        assert field.get_attribute("aria-invalid") == "true"
        checked(page, "recover-error")
        field.fill(codes[4].lower().replace("-", " "))
        page.get_by_role("button", name="Use this code").click()
        page.get_by_role("heading", name="You are in").wait_for()
        assert "You have 9 recovery codes left." in page.inner_text("main")
        checked(page, "recovered")

        # 3. Confirm a new number: only its own call puts it on file.
        page.get_by_role("link", name="Confirm a new number").click()
        page.get_by_role("heading", name="Confirm a new number").wait_for()
        checked(page, "new-number")
        page.get_by_label("New phone number").fill("201 555 0188")
        page.get_by_role("button", name="Call me").click()
        page.wait_for_url(re.compile(r"/phoneverify/wait$"))
        assert page.locator(".pv-number").inner_text() == "+1******0188"
        answer_and_key_in(context, base, shown_pin(page))
        page.wait_for_url(re.compile(r"/account$"))
        assert "+12015550188 is confirmed" in page.inner_text("main")
        assert "9 unused recovery codes" in page.inner_text("main")
    assert errors == []


def test_a_remembered_device_skips_the_call_at_the_next_login(context: Any, tmp_path: Path) -> None:
    errors: list[str] = []
    with serve(example(tmp_path)) as base:
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        log_in(page, base)
        page.wait_for_url(re.compile(r"/phoneverify/\?next="))
        confirm_by_phone(context, page, base, remember=True)
        page.wait_for_url(re.compile(r"/account$"))
        cookie = next(c for c in context.cookies() if c["name"] == "phoneverify_device")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

        log_out(page)
        log_in(page, base)
        page.wait_for_url(re.compile(r"/account$"))  # no call this time
        page.get_by_role("link", name=re.compile("Transfer")).click()
        page.wait_for_url(re.compile(r"/phoneverify/"))  # a step-up page still calls

        page.goto(base + "/account")
        page.get_by_role("button", name="Forget remembered devices").click()
        page.wait_for_url(re.compile(r"/$"))
        assert "Forgot 1 remembered device." in page.inner_text("main")
        page.goto(base + "/account")
        page.wait_for_url(re.compile(r"/account$"))  # this login's own marker was a call's
        log_out(page)
        log_in(page, base)
        page.wait_for_url(re.compile(r"/phoneverify/\?next="))  # forgotten: the call again
    assert errors == []
