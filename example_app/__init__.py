"""A small real app on flask-phoneverify: log in, open a protected page, confirm by phone.

Run it with ``flask --app example_app run``. It uses the built-in simulated
phone (turned on explicitly with PHONEVERIFY_DEV_PHONE), so no calls cost money;
settings can also come from FLASK_-prefixed environment variables, for example
``FLASK_PHONEVERIFY_STYLE=spoken``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, flash, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)

from flask_phoneverify import PhoneVerify, is_phone_verified, phone_verified_required
from flask_phoneverify.redirects import safe_next


@dataclass
class User(UserMixin):
    id: str
    email: str
    password: str
    name: str
    phone: str | None


DEMO_ACCOUNTS = (
    ("demo@example.com", "demo", "Dana Demo", "+12015550123"),
    ("new@example.com", "new", "Noor New", None),
)

phoneverify = PhoneVerify()
login_manager = LoginManager()
login_manager.login_view = "login"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secrets.token_hex(32),
        PHONEVERIFY_DEV_PHONE=True,  # the simulated phone: a demo, never production
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_DEFAULT_REGION="US",
        PHONEVERIFY_APP_NAME="Example Bank",
        PHONEVERIFY_BASE_TEMPLATE="base.html",
        PHONEVERIFY_DEFAULT_NEXT="/account",
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)

    users = {
        email: User(id=str(i), email=email, password=pw, name=name, phone=phone)
        for i, (email, pw, name, phone) in enumerate(DEMO_ACCOUNTS, start=1)
    }
    app.extensions["example_users"] = users

    login_manager.init_app(app)
    phoneverify.init_app(app)

    @app.get("/")
    def home() -> str:
        return render_template(
            "home.html", verified=current_user.is_authenticated and is_phone_verified()
        )

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        error = None
        if request.method == "POST":
            user = users.get(request.form.get("email", "").strip().lower())
            if user and secrets.compare_digest(user.password, request.form.get("password", "")):
                login_user(user)
                return redirect(safe_next(request.args.get("next")) or url_for("account"))
            error = "Wrong email or password."
        return render_template("login.html", error=error, accounts=DEMO_ACCOUNTS), (
            401 if error else 200
        )

    @app.post("/logout")
    @login_required
    def logout() -> Any:
        logout_user()
        flash("You are logged out.")
        return redirect(url_for("home"))

    @app.get("/account")
    @login_required
    @phone_verified_required
    def account() -> str:
        return render_template("account.html")

    @app.get("/account/transfer")
    @login_required
    @phone_verified_required(max_age=300)
    def transfer() -> str:
        return render_template("account.html", step_up=True)

    return app


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    users: dict[str, User] = current_app.extensions["example_users"]
    return next((u for u in users.values() if u.id == user_id), None)


@phoneverify.phone_saver
def save_phone(user: User, phone: str) -> None:
    """Called once a number typed on the verify page has been confirmed."""
    user.phone = phone
