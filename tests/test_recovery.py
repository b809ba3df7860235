"""Recovery codes: made only after a fresh phone confirmation, shown once, kept as keyed
hashes, single use (under races too), counted with wrong PINs, the same answer for
everyone, a marker flagged ``recovery`` that never satisfies ``max_age=``, and a new
number that only its own call can put on file."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from flask_phoneverify import PhoneVerify, recovery_code_used, recovery_codes_left
from flask_phoneverify import recovery as recovery_module
from flask_phoneverify.gate import MARKER
from flask_phoneverify.models import RecoveryCode, Status
from flask_phoneverify.recovery import ALPHABET, new_code, normalise
from flask_phoneverify.state import state
from flask_phoneverify.store import Tx

from .helpers import (
    SECRET,
    Harness,
    begin,
    csrf,
    dev_calls,
    events,
    get_json,
    log_text,
    post,
    press,
    row,
    verify_keypad,
    wrong,
)

CODE = re.compile(r"^[A-Z2-9]{4}-[A-Z2-9]{4}-[A-Z2-9]{2}$")


def codes_for(c: FlaskClient) -> list[str]:
    """Confirm the phone, then make a set of codes (JSON)."""
    verify_keypad(c)
    r = post(c, "/recovery-codes", token=csrf(c))
    assert r.status_code == 200, r.json
    codes: list[str] = r.json["codes"]
    return codes


def use(c: FlaskClient, code: Any) -> Any:
    return post(c, "/recover", {"code": code}, token=csrf(c))


def new_login(c: FlaskClient) -> None:
    with c.session_transaction() as s:
        s.clear()


def stored_codes(h: Harness) -> list[RecoveryCode]:
    with h.ext.state(h.app).store.session() as s:
        return list(s.scalars(select(RecoveryCode)))


# -- the codes ------------------------------------------------------------------------------


def test_codes_are_ten_unambiguous_characters_grouped_with_fifty_bits() -> None:
    assert len(set(ALPHABET)) == len(ALPHABET) == 32
    assert not set("0O1lI") & set(ALPHABET)
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(CODE.match(c) for c in codes)
    assert len(ALPHABET) ** len(normalise(next(iter(codes)))) >= 2**50


def test_codes_come_from_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []

    def choice(seq: str) -> str:
        drawn.append(seq)
        return seq[0]

    monkeypatch.setattr(recovery_module.secrets, "choice", choice)
    assert new_code() == "AAAA-AAAA-AA" and drawn == [ALPHABET] * 10


def test_a_set_is_made_after_a_phone_confirmation_and_kept_as_keyed_hashes(
    harness: Harness,
) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert all(CODE.match(code) for code in codes)
    stored = stored_codes(harness)
    assert len(stored) == 10 and {r.user_id for r in stored} == {"1"}
    hashes = {r.code_hash for r in stored}
    for code in codes:
        for form in (code, normalise(code)):
            assert form not in hashes
            assert hashlib.sha256(form.encode()).hexdigest() not in hashes
            assert hmac.new(SECRET.encode(), form.encode(), hashlib.sha256).hexdigest() not in (
                hashes
            )
    raw = b"".join(p.read_bytes() for p in Path(harness.app.instance_path).parent.glob("pv*"))
    assert not any(normalise(code).encode() in raw or code.encode() in raw for code in codes)
    assert [e.kind for e in events(harness, "recovery_codes")] == ["recovery_codes"]


def test_making_codes_needs_a_phone_confirmation_at_most_ten_minutes_old(
    harness: Harness,
) -> None:
    c = harness.client("1")
    r = post(c, "/recovery-codes", token=csrf(c))
    assert r.status_code == 401 and r.json["error"] == "phone_verification_required"
    assert r.json["verify_url"].startswith("/phoneverify/")
    verify_keypad(c)
    harness.clock.advance(601)
    assert c.get("/secret").status_code == 200  # still verified for the gate
    r = post(c, "/recovery-codes", token=csrf(c))
    assert r.status_code == 401 and r.json["error"] == "phone_verification_required"
    assert stored_codes(harness) == []
    assert get_json(c, "/recovery-codes").json["can_generate"] is False


def test_a_new_set_invalidates_the_old_one(harness: Harness) -> None:
    c = harness.client("1")
    old = codes_for(c)
    new = post(c, "/recovery-codes", token=csrf(c)).json["codes"]
    assert not set(old) & set(new)
    assert len(stored_codes(harness)) == 10
    r = use(c, old[0])
    assert r.status_code == 400 and r.json["error"] == "wrong_code"
    assert use(c, new[0]).status_code == 200


def test_recovery_codes_left_is_exported(harness: Harness) -> None:
    c = harness.client("1")
    user = harness.users["1"]
    with harness.app.app_context():
        assert recovery_codes_left(user) == 0
    codes = codes_for(c)
    with harness.app.app_context():
        assert recovery_codes_left(user) == 10
    use(c, codes[3])
    with harness.app.app_context():
        assert recovery_codes_left(user) == 9
        assert recovery_codes_left(harness.users["2"]) == 0
    assert get_json(c, "/recovery-codes").json["left"] == 9


# -- using one -------------------------------------------------------------------------------


def test_a_right_code_opens_the_gate_with_a_recovery_marker(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    new_login(c)  # a later login, phone lost
    assert c.get("/secret").status_code == 302
    seen: list[tuple[Any, int]] = []

    def on_used(sender: Any, user: Any, codes_left: int) -> None:
        seen.append((user, codes_left))

    recovery_code_used.connect(on_used, harness.app)
    try:
        r = use(c, codes[0])
    finally:
        recovery_code_used.disconnect(on_used, harness.app)
    assert r.status_code == 200
    assert r.json["status"] == "verified" and r.json["recovery"] is True
    assert r.json["codes_left"] == 9 and "9 recovery codes left" in r.json["message"]
    assert seen == [(harness.users["1"], 9)]
    assert c.get("/secret").status_code == 200
    assert c.get("/fresh").status_code == 302  # never enough for a max_age= view
    with c.session_transaction() as s:
        assert s[MARKER]["f"] == "recovery"
    (event,) = events(harness, "recovery_used")
    assert event.user_id == "1" and event.detail == "9 codes left"


def test_input_is_forgiving(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    forms = [
        codes[0].lower(),
        codes[1].replace("-", ""),
        " ".join(codes[2].replace("-", "")),
        f"  {codes[3].lower().replace('-', ' - ')}  ",
    ]
    for form in forms:
        new_login(c)
        assert use(c, form).status_code == 200, form


def test_a_code_works_once(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    assert use(c, codes[0]).status_code == 200
    r = use(c, codes[0])
    assert r.status_code == 400 and r.json["error"] == "wrong_code"


def test_a_code_is_the_users_own(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    other = harness.client("2")
    r = use(other, codes[0])
    assert r.status_code == 400 and r.json["error"] == "wrong_code"
    assert other.get("/secret").status_code == 302
    assert use(c, codes[0]).status_code == 200


def test_advice_to_make_new_codes_at_two_or_fewer(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_RECOVERY_CODES=4)
    c = h.client("1")
    codes = codes_for(c)
    said = [use(c, code).json["message"] for code in codes]
    assert "generate a new set" not in said[0]  # 3 left
    assert all("generate a new set" in m for m in said[1:])
    assert said[-1].startswith("You have 0 recovery codes left.")


def test_bad_input_is_a_clear_error_never_a_500(harness: Harness) -> None:
    c = harness.client("1")
    codes_for(c)
    for value in (None, "", "   ", 12345, ["A"], {"a": 1}):
        r = use(c, value)
        assert r.status_code == 400 and r.json["error"] == "bad_request", value
        assert r.json["message"]
    for value in ("Z" * 65, "ü" * 20, "\x00ABCD"):
        r = use(c, value)
        assert r.status_code == 400 and r.json["error"] == "wrong_code"
    r = c.post("/phoneverify/recover", data="not json", headers={"X-CSRFToken": csrf(c)})
    assert r.status_code in (302, 303, 400)


def test_using_a_code_needs_the_csrf_token(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    new_login(c)
    r = post(c, "/recover", {"code": codes[0]})
    assert r.status_code == 400 and r.json["error"] == "csrf"
    r = post(c, "/recovery-codes", {})
    assert r.status_code == 400 and r.json["error"] == "csrf"
    assert len(stored_codes(harness)) == 10


def test_anonymous_visitors_are_the_login_systems_business(harness: Harness) -> None:
    c = harness.client(None)
    assert c.get("/phoneverify/recover").status_code == 401
    assert c.post("/phoneverify/recover", json={"code": "x"}).status_code == 401


# -- abuse -----------------------------------------------------------------------------------


def test_wrong_codes_get_one_generic_answer_whether_or_not_the_user_has_codes(
    harness: Harness,
) -> None:
    has = harness.client("1")
    codes_for(has)
    none = harness.client("2")
    a = use(has, "ABCD-EFGH-JK")
    b = use(none, "ABCD-EFGH-JK")
    assert (a.status_code, a.json) == (b.status_code, b.json)
    assert a.json == {
        "error": "wrong_code",
        "message": "That recovery code is not valid. Check it and try again.",
    }


def test_the_same_work_whether_or_not_the_user_has_codes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timing is not measured (no timing assertions): the comparisons are counted, and a
    user with no codes costs as many as a user with a full set."""
    has = harness.client("1")
    codes_for(has)
    none = harness.client("2")
    real = hmac.compare_digest
    compared: list[int] = []

    def counting(a: Any, b: Any) -> bool:
        compared.append(1)
        return real(a, b)

    only_here = SimpleNamespace(new=hmac.new, compare_digest=counting)
    monkeypatch.setattr(recovery_module, "hmac", only_here)
    use(has, "ABCD-EFGH-JK")
    with_codes = len(compared)
    compared.clear()
    use(none, "ABCD-EFGH-JK")
    assert with_codes == len(compared) == 10


def test_wrong_codes_count_with_wrong_pins_and_lock_the_same_way(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_MAX_FAILURES_PER_HOUR=4, PHONEVERIFY_STYLE="spoken")
    c = h.client("1")
    token, body = begin(c)
    pin = dev_calls(c)[-1]["pin"]
    # Two wrong PINs on an open verification...
    for _ in range(2):
        r = post(c, "/confirm", {"token": body["token"], "pin": wrong(pin)}, token=token)
        assert r.json["error"] == "wrong_pin"
    # ...and wrong recovery codes reach the same hourly cap.
    assert use(c, "ABCD-EFGH-JK").json["error"] == "wrong_code"
    r = use(c, "ABCD-EFGH-JM")
    assert r.status_code == 429 and r.json["error"] == "locked"
    assert int(r.headers["Retry-After"]) > 0
    assert row(h, body["token"]).status == Status.LOCKED  # the open verification locked
    # Locked: even a right PIN, a right code or a new call is refused now.
    r = post(c, "/confirm", {"token": body["token"], "pin": pin}, token=token)
    assert r.status_code == 429
    r = post(c, "/start", {}, token=token)
    assert r.status_code == 429 and "Too many wrong PINs" in r.json["message"]
    assert [e.kind for e in events(h, "recovery_failed")] == ["recovery_failed"] * 2


def test_at_the_cap_even_a_right_code_is_refused_until_the_hour_is_out(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_MAX_FAILURES_PER_HOUR=3)
    c = h.client("1")
    codes = codes_for(c)
    new_login(c)
    answers = [use(c, f"ABCD-EFGH-J{x}") for x in "KLM"]
    assert [r.json["error"] for r in answers] == ["wrong_code", "wrong_code", "locked"]
    r = use(c, codes[0])
    assert r.status_code == 429 and r.json["error"] == "locked"
    assert c.get("/secret").status_code == 302
    h.clock.advance(3601)
    assert use(c, codes[0]).status_code == 200


def test_codes_and_pins_never_reach_logs_or_the_audit_trail(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    c = harness.client("1")
    codes = codes_for(c)
    use(c, codes[0])
    use(c, codes[0].lower())
    text = log_text(caplog) + repr([(e.kind, e.detail) for e in events(harness)])
    for code in codes:
        assert code not in text and normalise(code) not in text


# -- races -----------------------------------------------------------------------------------


def build(uri: str, tmp_path: Path) -> Flask:
    app = Flask("recovery_race", instance_path=str(tmp_path / "instance"))
    app.config.update(TESTING=True, SECRET_KEY=SECRET, PHONEVERIFY_DATABASE_URI=uri)
    PhoneVerify(app)
    return app


def test_one_code_used_by_concurrent_requests_works_once(
    database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight workers (apps of their own on one database) spend the same code at once:
    exactly one succeeds, on SQLite and on PostgreSQL. Each pauses between reading the
    codes and spending one, so on PostgreSQL all of them have seen the code unspent."""
    read = Tx.recovery_hashes

    def slow_read(tx: Tx, user_id: str) -> list[str]:
        found = read(tx, user_id)
        time.sleep(0.2)  # widens the race window; nothing here measures time
        return found

    monkeypatch.setattr(Tx, "recovery_hashes", slow_read)
    apps = [build(database_uri, tmp_path) for _ in range(8)]
    try:
        codes = state(apps[0]).recovery.generate("u1", ip=None)  # type: ignore[union-attr]
        barrier = threading.Barrier(len(apps))
        outcomes: list[str] = []

        def go(app: Flask) -> None:
            rec = state(app).recovery
            assert rec is not None
            barrier.wait(30)
            try:
                rec.use("u1", codes[0], ip=None)
                outcomes.append("used")
            except recovery_module.WrongCode:
                outcomes.append("wrong")

        threads = [threading.Thread(target=go, args=(app,)) for app in apps]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(outcomes) == ["used"] + ["wrong"] * 7
        assert state(apps[0]).recovery.left("u1") == 9  # type: ignore[union-attr]
    finally:
        for app in apps:
            state(app).close()


# -- off, pages, a new number ----------------------------------------------------------------


def test_zero_turns_the_feature_off(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_RECOVERY_CODES=0)
    c = h.client("1")
    verify_keypad(c)
    token = csrf(c)
    assert post(c, "/recovery-codes", token=token).status_code == 404
    assert post(c, "/recover", {"code": "ABCD-EFGH-JK"}, token=token).status_code == 404
    assert c.get("/phoneverify/recover").status_code == 404
    assert b"Use a recovery code" not in c.get("/phoneverify/").data


def test_verify_page_offers_a_recovery_code(harness: Harness) -> None:
    page = harness.client("1").get("/phoneverify/?next=/secret").data.decode()
    assert "Use a recovery code" in page and "/phoneverify/recover?next=/secret" in page


def test_pages_generate_show_once_download_and_use(harness: Harness) -> None:
    c = harness.client("1")
    page = c.get("/phoneverify/recovery-codes").data.decode()
    assert "Confirm my phone" in page and "Generate" not in page
    verify_keypad(c)
    page = c.get("/phoneverify/recovery-codes").data.decode()
    assert "You have no recovery codes yet." in page and "Generate codes" in page
    r = c.post("/phoneverify/recovery-codes", data={"csrf_token": csrf(c)})
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    shown = r.data.decode()
    codes = re.findall(r"<code>([A-Z2-9-]{12})</code>", shown)
    assert len(codes) == 10
    assert 'download="recovery-codes.txt"' in shown
    assert "%0A".join(codes) + "%0A" in shown  # the text file: one code a line
    assert 'id="pv-copy"' in shown and "only this once" in shown
    again = c.get("/phoneverify/recovery-codes").data.decode()
    assert not any(code in again for code in codes) and "You have 10 unused codes." in again

    new_login(c)
    form = c.get("/phoneverify/recover?next=/secret").data.decode()
    assert '<label for="pv-code">Recovery code</label>' in form
    r = c.post(
        "/phoneverify/recover", data={"csrf_token": csrf(c), "code": "nope", "next": "/secret"}
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("/phoneverify/recover")
    page = c.get("/phoneverify/recover").data.decode()
    assert 'role="alert"' in page and "not valid" in page and 'aria-invalid="true"' in page
    assert "not valid" not in c.get("/phoneverify/recover").data.decode()  # shown once
    r = c.post(
        "/phoneverify/recover", data={"csrf_token": csrf(c), "code": codes[0], "next": "/secret"}
    )
    assert r.status_code == 303
    page = c.get("/phoneverify/recover").data.decode()
    assert "You are in" in page and "You have 9 recovery codes left." in page
    assert 'href="/secret"' in page and "Confirm a new number" in page
    assert c.get("/secret").status_code == 200


def test_the_generate_form_without_a_fresh_confirmation_says_so(harness: Harness) -> None:
    c = harness.client("1")
    verify_keypad(c)
    harness.clock.advance(601)
    page = c.get("/phoneverify/recovery-codes").data.decode()
    assert "Confirm my phone" in page and "max_age=600" in page
    r = c.post("/phoneverify/recovery-codes", data={"csrf_token": csrf(c)})
    assert r.status_code == 303 and r.headers["Location"].endswith("/phoneverify/recovery-codes")
    page = c.get("/phoneverify/recovery-codes").data.decode()
    assert 'role="alert"' in page and "last 10 minutes" in page
    assert stored_codes(harness) == []


def test_a_recovery_marker_cannot_make_codes(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    new_login(c)
    assert use(c, codes[0]).status_code == 200
    r = post(c, "/recovery-codes", token=csrf(c))
    assert r.status_code == 401 and r.json["error"] == "phone_verification_required"


def test_after_a_recovery_a_new_number_needs_its_own_call(harness: Harness) -> None:
    c = harness.client("1")
    codes = codes_for(c)
    new_login(c)
    token = csrf(c)
    r = post(c, "/new-number", {"phone": "+12015550777"}, token=token)
    assert r.status_code == 401 and r.json["error"] == "phone_verification_required"
    assert use(c, codes[0]).status_code == 200
    r = post(c, "/new-number", {"phone": "+12015550777"}, token=token)
    assert r.status_code == 200, r.json
    assert harness.saved_phones == [] and harness.users["1"].phone == "+12015550123"
    # A wrong PIN for the new number changes nothing either.
    call = dev_calls(c)[-1]
    assert call["number"] == "+1******0777"
    press(c, token, call["id"], wrong(r.json["pin"]))
    assert harness.saved_phones == []
    press(c, token, call["id"], r.json["pin"])
    assert post(c, "/confirm", {"token": r.json["token"]}, token=token).status_code == 200
    assert harness.saved_phones == [("1", "+12015550777")]
    assert c.get("/fresh").status_code == 200  # a phone confirmation again
    with c.session_transaction() as s:
        assert "f" not in s[MARKER]
    # And now new codes can be made.
    assert post(c, "/recovery-codes", token=token).status_code == 200


def test_new_number_page_and_errors(harness: Harness) -> None:
    c = harness.client("1")
    assert c.get("/phoneverify/new-number").status_code == 302  # confirm first
    verify_keypad(c)
    page = c.get("/phoneverify/new-number").data.decode()
    assert '<label for="pv-phone">New phone number</label>' in page
    r = c.post("/phoneverify/new-number", data={"csrf_token": csrf(c), "phone": "12"})
    assert r.status_code == 303
    page = c.get("/phoneverify/new-number").data.decode()
    assert 'role="alert"' in page and 'aria-invalid="true"' in page
    r = post(c, "/new-number", {"phone": ["x"]}, token=csrf(c))
    assert r.status_code == 400 and r.json["error"] == "bad_request"
