"""The tutorial's code runs: every ```python block of docs/tutorial.md, in order, is
written to one ``app.py``, imported as a fresh module, and driven as the page says a
person would (log in, meet the gate, call, key the PIN in on the simulated phone)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
JSON = {"Accept": "application/json"}


def tutorial_code() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```$", TUTORIAL.read_text(), re.M | re.S)
    assert len(blocks) >= 3, "the tutorial lost its code"
    return "\n\n".join(blocks)


def test_the_tutorial_app_confirms_a_phone_as_the_page_says(tmp_path: Any) -> None:
    path = tmp_path / "app.py"
    path.write_text(tutorial_code())
    spec = importlib.util.spec_from_file_location("tutorial_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["tutorial_app"] = module
    try:
        spec.loader.exec_module(module)
        app = module.app
        c = app.test_client()
        r = c.get("/billing")
        assert r.status_code == 302 and "/login" in r.location
        c.post("/login", data={"email": "dana@example.com"})
        r = c.get("/billing")
        assert r.status_code == 302 and r.location.endswith("/phoneverify/?next=/billing")
        page = c.get(r.location)
        assert page.status_code == 200 and b"Call me" in page.data
        csrf = c.get("/phoneverify/", headers=JSON).json["csrf_token"]
        post = {**JSON, "X-CSRFToken": csrf}
        started = c.post("/phoneverify/start", json={"next": "/billing"}, headers=post).json
        assert started["style"] == "keypad"
        call = c.get("/phoneverify/dev/phone", headers=JSON).json["calls"][-1]
        assert "Example Bank" in call["text"]
        c.post(f"/phoneverify/dev/phone/{call['id']}/answer", json={}, headers=post)
        keys = c.post(
            f"/phoneverify/dev/phone/{call['id']}/keys",
            json={"digits": started["pin"]},
            headers=post,
        )
        assert keys.json["accepted"] is True
        done = c.post("/phoneverify/confirm", json={"token": started["token"]}, headers=post)
        assert done.json == {"status": "verified", "next": "/billing"}
        assert c.get("/billing").data == b"Your invoices."
        assert c.post("/billing/pay").data == b"Paid."
    finally:
        sys.modules.pop("tutorial_app", None)
        state = app.extensions.get("phoneverify.state") if "app" in locals() else None
        if state is not None:
            state.close()
