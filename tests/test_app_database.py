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
