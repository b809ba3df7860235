"""With the app's Flask-SQLAlchemy ``db``, the extension's tables live in the app's database."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_phoneverify import PhoneVerify

from .helpers import SECRET, DemoUser, csrf, get_json, post


def test_tables_join_the_apps_metadata_and_the_flow_uses_its_engine(tmp_path: Any) -> None:
    app = Flask("with_db", instance_path=str(tmp_path / "instance"))
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/app.sqlite3",
    )
    db = SQLAlchemy(app)
    ext = PhoneVerify(app, db=db)
    ext.user_loader(lambda: DemoUser("1", "+12015550123"))
    assert {"phoneverify_verifications", "phoneverify_events"} <= set(db.metadata.tables)
    with app.app_context():
        db.create_all()  # what the docs tell apps to run (or a migration)

    c = app.test_client()
    token = csrf(c)
    body = post(c, "/start", token=token).json
    call = get_json(c, "/dev/phone").json["calls"][-1]
    post(c, f"/dev/phone/{call['id']}/keys", {"digits": body["pin"]}, token=token)
    assert post(c, "/confirm", {"token": body["token"]}, token=token).status_code == 200

    with app.app_context():
        statuses = (
            db.session.execute(sa.text("SELECT status FROM phoneverify_verifications"))
            .scalars()
            .all()
        )
        db.engine.dispose()
    assert statuses == ["verified"]
    # no store of its own was opened beside the app's database
    assert not os.path.exists(tmp_path / "instance" / "phoneverify.sqlite3")


def test_the_app_going_away_closes_the_provider_and_the_stores_engine(tmp_path: Any) -> None:
    """Provider clients and the extension's own engine are released with the app (or at
    once by ``PhoneVerify.close``), so tests and reloads do not leak connections."""
    import gc

    from sqlalchemy import event

    from flask_phoneverify.state import state

    def build() -> tuple[Flask, PhoneVerify]:
        app = Flask("closing", instance_path=str(tmp_path / "instance"))
        app.config.update(
            TESTING=True,
            SECRET_KEY=SECRET,
            PHONEVERIFY_PROVIDER="xverify",
            PHONEVERIFY_XVERIFY_API_KEY="k" * 20,
            PHONEVERIFY_XVERIFY_DOMAIN="example.com",
            PHONEVERIFY_DATABASE_URI=f"sqlite:///{tmp_path}/own.sqlite3",
        )
        return app, PhoneVerify(app)

    app, ext = build()
    st = state(app)
    closed: list[object] = []
    event.listen(st.store.engine.pool, "close", lambda *_: closed.append(1))
    with st.store.engine.connect():
        pass
    ext.close(app)
    assert st.provider.client.is_closed  # type: ignore[attr-defined]
    assert closed  # the pooled connection was closed

    app, _ = build()
    client = state(app).provider.client  # type: ignore[attr-defined]
    del app, _
    gc.collect()
    assert client.is_closed
