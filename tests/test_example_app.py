"""The example app's own forms (log in, log out, forget devices) need this session's
CSRF token, as the extension's do: a page on another site cannot log a visitor in to
the demo account, log them out, or make them forget their devices."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def client(tmp_path: Path) -> Any:
    from example_app import create_app

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "example-app-test-key-0123456789",
            "PHONEVERIFY_DATABASE_URI": f"sqlite:///{tmp_path}/pv.sqlite3",
        },
        instance_path=str(tmp_path / "instance"),
    )
    return app.test_client()


def form_token(client: Any, path: str) -> str:
    found = TOKEN.search(client.get(path).get_data(as_text=True))
    assert found, f"{path} has no form with a CSRF token"
    return found[1]


DEMO = {"email": "demo@example.com", "password": "demo"}


def logged_in(client: Any) -> bool:
    """The account page does not send this client to the login page."""
    return "/login" not in (client.get("/account").location or "")


def test_login_needs_the_forms_token(client: Any) -> None:
    refused = client.post("/login", data=DEMO)
    assert refused.status_code == 400 and b"security token" in refused.data
    assert not logged_in(client)
    forged = client.post("/login", data={**DEMO, "csrf_token": "forged"})
    assert forged.status_code == 400 and not logged_in(client)
    token = form_token(client, "/login")
    r = client.post("/login", data={**DEMO, "csrf_token": token})
    assert r.status_code == 302 and logged_in(client)


def test_logout_and_forget_devices_need_the_token(client: Any) -> None:
    client.post("/login", data={**DEMO, "csrf_token": form_token(client, "/login")})
    assert client.post("/logout").status_code == 400
    assert client.post("/account/forget-devices").status_code == 400
    assert logged_in(client)
    r = client.post("/logout", data={"csrf_token": form_token(client, "/")})
    assert r.status_code == 302 and not logged_in(client)
