"""Enrolment: off by default; when on, a typed number is learnt only once verified."""

from __future__ import annotations

from typing import Any

from flask_phoneverify import phone_enrolled

from .helpers import csrf, get_json, post


def test_no_phone_and_no_enrolment_gets_a_clear_page(make_app: Any) -> None:
    h = make_app()
    c = h.client("3")
    r = c.get("/phoneverify/")
    assert r.status_code == 409 and b"no phone number on file" in r.data
    token = csrf(c)
    r = post(c, "/start", {"phone": "+12015550199"}, token=token)
    assert r.status_code == 400 and "no phone number on file" in r.json["message"]
    assert h.saved_phones == []


def test_enrolment_verifies_then_saves(make_app: Any) -> None:
    h = make_app(
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_DEFAULT_REGION="US",
        PHONEVERIFY_STYLE="spoken",
    )
    seen: list[str] = []

    def on_enrolled(sender: Any, user: Any, phone: str, **extra: Any) -> None:
        seen.append(phone)

    phone_enrolled.connect(on_enrolled, h.app)
    try:
        c = h.client("3")
        page = c.get("/phoneverify/")
        assert page.status_code == 200 and b'name="phone"' in page.data
        token = csrf(c)
        assert get_json(c, "/").json["enrolment"] is True
        body = post(c, "/start", {"phone": "(201) 555-0199"}, token=token).json
        assert h.saved_phones == [] and seen == []
        pin = get_json(c, "/dev/phone").json["calls"][-1]["pin"]
        r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
        assert r.status_code == 200
        assert h.saved_phones == [("3", "+12015550199")]
        assert seen == ["+12015550199"]
    finally:
        phone_enrolled.disconnect(on_enrolled, h.app)


def test_enrolment_bad_number_gets_a_clear_message(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True)
    c = h.client("3")
    token = csrf(c)
    for typed, words in (
        ("", "enter a phone number"),
        ("hello", "does not look like"),
        ("2015550199", "country code"),
        ("+1 555 0100", "not valid"),
    ):
        r = post(c, "/start", {"phone": typed}, token=token)
        assert r.status_code == 400 and words in r.json["message"].lower(), (typed, r.json)
    r = c.post("/phoneverify/start", data={"csrf_token": token, "phone": "hello"})
    assert r.status_code == 303  # Post/Redirect/Get: the verify page shows the error once
    page = c.get(r.location)
    assert b"does not look like" in page.data and b'value="hello"' in page.data
    assert b'aria-invalid="true"' in page.data


def test_enrolment_does_not_replace_a_number_on_file(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_ALLOW_ENROLMENT=True)
    c = h.client("1")
    token = csrf(c)
    post(c, "/start", {"phone": "+12015550199"}, token=token)
    assert get_json(c, "/dev/phone").json["calls"][-1]["number"] == "+1******0123"
