"""A small real app on flask-phoneverify: log in, open a protected page, confirm by phone.

Run it with ``flask --app example_app run``. The whole way back is on the account page:
make recovery codes, log out as if the phone were lost, log in with "Use a recovery
code", then confirm a new number by a call to it. It uses the built-in simulated
phone (turned on explicitly with PHONEVERIFY_DEV_PHONE), so no calls cost money;
settings can also come from FLASK_-prefixed environment variables, for example
``FLASK_PHONEVERIFY_STYLE=spoken``.

The session key comes from ``FLASK_SECRET_KEY`` when it is set; otherwise one key is
generated on first start and kept in the instance folder (``secret_key``), so every
worker of a multi-process server (``gunicorn -w 4 'example_app:create_app()'``) signs
sessions with the same key and a session survives landing on another worker.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import (
    LoginManager,
    UserMixin,
    current_user,
    login_required,
    login_user,
    logout_user,
)

from flask_phoneverify import (
    PhoneVerify,
    forget_remembered_devices,
    is_phone_verified,
    phone_verified_required,
    recovery_codes_left,
)
from flask_phoneverify.csrf import CSRFFailed, generate_csrf, validate_csrf
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


KEY_FILE_NAME = "secret_key"


def shared_secret_key(instance_path: str) -> str:
    """The key kept in ``instance_path``, made there on first use.

    Workers starting together may all find no key: each writes its own candidate to a
    temporary file and links it into place, which fails when another worker's is already
    there; everyone then reads the one key that won, so all agree.
    """
    os.makedirs(instance_path, exist_ok=True)
    path = os.path.join(instance_path, KEY_FILE_NAME)
    if not os.path.exists(path):
        candidate = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            try:
                os.link(candidate, path)  # never replaces a key that is already there
            except FileExistsError:
                pass
        finally:
            os.unlink(candidate)
    with open(path) as f:
        key = f.read().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} holds no usable key: delete it to make a new one")
    return key


def create_app(config: dict[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """The example app. ``instance_path``: where the key and the SQLite store are kept
    (default: Flask's ``instance/`` folder next to the package)."""
    app = Flask(__name__, instance_path=instance_path)
    app.config.update(
        PHONEVERIFY_DEV_PHONE=True,  # the simulated phone: a demo, never production
        PHONEVERIFY_ALLOW_ENROLMENT=True,
        PHONEVERIFY_DEFAULT_REGION="US",
        PHONEVERIFY_APP_NAME="Example Bank",
        PHONEVERIFY_BASE_TEMPLATE="base.html",
        PHONEVERIFY_DEFAULT_NEXT="/account",
        # The demo's own limits, roomy enough to try every style, the wrong-PIN lock and each
        # provider recipe in a row (the production defaults are 3 calls per number and 5 per
        # account an hour, 30 s between calls to one number). `flask phoneverify reset`
        # clears the counts kept in the instance database.
        PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=60,
        PHONEVERIFY_CALLS_PER_USER_PER_HOUR=60,
        PHONEVERIFY_CALLS_PER_IP_PER_HOUR=120,
        PHONEVERIFY_ENROL_CALLS_PER_NUMBER_PER_HOUR=60,
        PHONEVERIFY_ENROL_CALLS_PER_USER_PER_HOUR=60,
        PHONEVERIFY_BRIDGE_CALLS_PER_USER_PER_HOUR=20,
        PHONEVERIFY_MAX_FAILURES_PER_HOUR=50,
        PHONEVERIFY_NUMBER_COOLDOWN=10,
        # "Remember this device" on the confirm page; recovery codes are on by default (10)
        PHONEVERIFY_REMEMBER_DAYS=30,
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = shared_secret_key(app.instance_path)

    users = {
        email: User(id=str(i), email=email, password=pw, name=name, phone=phone)
        for i, (email, pw, name, phone) in enumerate(DEMO_ACCOUNTS, start=1)
    }
    app.extensions["example_users"] = users

    login_manager.init_app(app)
    phoneverify.init_app(app)

    # The demo's own forms (log in, log out, forget devices) carry the extension's CSRF
    # token too; an app with Flask-WTF's CSRFProtect would use that instead.
    app.jinja_env.globals["csrf_token"] = generate_csrf

    @app.before_request
    def check_csrf() -> None:
        if request.method == "POST" and request.blueprint != "phoneverify":
            try:
                validate_csrf()
            except CSRFFailed as e:
                abort(400, description=e.message)

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
        return render_template("account.html", recovery_left=recovery_codes_left(current_user))

    @app.post("/account/forget-devices")
    @login_required
    @phone_verified_required
    def forget_devices() -> Any:
        gone = forget_remembered_devices(current_user)
        flash(f"Forgot {gone} remembered {'device' if gone == 1 else 'devices'}.")
        return redirect(url_for("home"))

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
