"""Test kit for providers and for apps: a pytest plugin (entry point ``pytest11``).

It loads in every project that installs flask-phoneverify, so importing it stays
cheap: it builds no Flask app and imports no vendor client library (zeep, httpx)
until a test asks for it. What it offers:

- :class:`ProviderContract`, the provider contract suite. A provider package
  subclasses it with its provider class, the settings that point the provider at
  a loopback server, and a ``phoneverify_vendor`` fixture serving that server
  (a :class:`ContractVendor`); pytest then runs every contract test against it:
  calls in each style it declares, status, callbacks, declined, busy, a refused
  number, 5xx, garbage, hostile XML or JSON, a timeout, and credentials never in
  logs or errors. The built-in providers' tests run the same suite.
- :func:`mark_phone_verified` for tests of an app's gated views, and
  :class:`DevPhoneDriver` to act on the simulated phone (answer, key digits,
  decline, let voicemail answer) through the app's own pages.
- fixtures, all named ``phoneverify_*``: ``phoneverify_loopback`` (serve a WSGI
  app on 127.0.0.1 for the test).

See ``docs/providers/writing.md`` for a worked example.
"""

from __future__ import annotations

import enum
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import pytest

if TYPE_CHECKING:  # only for annotations: nothing heavy at import time
    from flask import Flask
    from flask.testing import FlaskClient

    from .providers.base import Provider, Style

__all__ = [
    "ProviderContract",
    "ContractVendor",
    "Scenario",
    "mark_phone_verified",
    "DevPhoneDriver",
    "serve",
    "phoneverify_loopback",
]

#: a number every contract test calls (North American, so every vendor can call it)
NUMBER = "+12015550123"


# -- the plugin's own hooks ------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Rewrite asserts in this package only. pytest marks every top-level name of the
    distribution that registers a ``pytest11`` plugin for assertion rewriting; a checkout
    installed in editable mode lists its ``tests`` and ``example_app`` there too, and an
    app served from rewritten modules was seen to hang the browser tests."""
    hook = getattr(config.pluginmanager, "rewrite_hook", None)
    marked = getattr(hook, "_must_rewrite", None)
    if isinstance(marked, set):
        marked.difference_update({"tests", "example_app"})


# -- loopback serving ------------------------------------------------------------------------


@contextmanager
def serve(app: Callable[..., Any], *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve a WSGI ``app`` on a free loopback port until the block ends; yields its base
    URL (``http://127.0.0.1:PORT``)."""
    from werkzeug.serving import make_server

    server = make_server(host, 0, app, threaded=True)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://{host}:{server.port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def phoneverify_loopback() -> Iterator[Callable[[Callable[..., Any]], str]]:
    """``serve(wsgi_app) -> base URL``: each app served on 127.0.0.1 until the test ends."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        yield lambda app: stack.enter_context(serve(app))


# -- helpers for an app's own tests ----------------------------------------------------------------


def mark_phone_verified(client: FlaskClient, user: Any, *, at: float | None = None) -> None:
    """Mark ``user``'s phone as confirmed in ``client``'s session, as a verification
    would, so a test of a gated view need not place a call.

    ``user`` is the app's user object (its id from ``get_id()`` or ``id``, its number
    from the attribute PHONEVERIFY_USER_PHONE_ATTR names); ``at``: when the phone
    confirmed (the extension's clock by default), for tests of ``max_age``."""
    from .gate import MARKER, number_tag
    from .state import state

    st = state(client.application)
    get_id = getattr(user, "get_id", None)
    uid = get_id() if callable(get_id) else getattr(user, "id", None)
    if uid is None:
        raise ValueError("mark_phone_verified: the user has no id (get_id() or .id)")
    raw = getattr(user, st.settings.user_phone_attr, None)
    tag = number_tag(st.marker_key, str(raw) if raw else None, st.settings.default_region)
    if tag is None:
        raise ValueError(
            f"mark_phone_verified: the user's {st.settings.user_phone_attr!r} is not a "
            "phone number the gate would accept"
        )
    with client.session_transaction() as session:
        session[MARKER] = {
            "u": str(uid),
            "t": st.clock() if at is None else at,
            "h": tag,
            "n": "test",
        }


class DevPhoneDriver:
    """The simulated phone (PHONEVERIFY_PROVIDER = "dev"), driven through the app's own
    pages with a logged-in ``client``, the way a developer uses it in a browser.

    Each action takes the simulated phone's call id; without one it acts on the
    newest call of the client's user."""

    def __init__(self, client: FlaskClient) -> None:
        from .state import state

        self.client = client
        self.prefix = state(client.application).settings.url_prefix.rstrip("/")
        self._csrf: str | None = None

    def calls(self) -> list[dict[str, Any]]:
        """The user's calls on the simulated phone, oldest first (its JSON listing)."""
        r = self.client.get(self.prefix + "/dev/phone", headers={"Accept": "application/json"})
        if r.status_code != 200:
            raise AssertionError(f"the simulated phone answered {r.status_code}")
        calls: list[dict[str, Any]] = (r.get_json() or {})["calls"]
        return calls

    def newest(self) -> dict[str, Any]:
        """The user's newest call (the one a test usually acts on)."""
        calls = self.calls()
        if not calls:
            raise AssertionError("the simulated phone has no call for this user")
        return calls[-1]

    def spoken_code(self, call_id: str | None = None) -> str | None:
        """What a spoken call says (its ``pin``): what the person heard."""
        call = self._call(call_id)
        pin: str | None = call.get("pin")
        return pin

    def answer(self, call_id: str | None = None) -> dict[str, Any]:
        """Pick the call up (a spoken call then speaks its code)."""
        return self._act(call_id, "answer")

    def key(self, digits: str, call_id: str | None = None) -> dict[str, Any]:
        """Key ``digits`` in on the call's keypad (keypad style)."""
        return self._act(call_id, "keys", {"digits": digits})

    def decline(self, call_id: str | None = None) -> dict[str, Any]:
        """Refuse the ringing call (or hang up an answered one)."""
        return self._act(call_id, "hangup")

    hang_up = decline

    def voicemail(self, call_id: str | None = None) -> dict[str, Any]:
        """Let voicemail answer the call instead of the person."""
        return self._act(call_id, "voicemail")

    def _call(self, call_id: str | None) -> dict[str, Any]:
        if call_id is None:
            return self.newest()
        return next(c for c in self.calls() if c["id"] == call_id)

    def _token(self) -> str:
        if self._csrf is None:
            r = self.client.get(self.prefix + "/", headers={"Accept": "application/json"})
            token = (r.get_json(silent=True) or {}).get("csrf_token")
            if not token:
                raise AssertionError(f"no CSRF token from the verify page ({r.status_code})")
            self._csrf = str(token)
        return self._csrf

    def _act(
        self, call_id: str | None, action: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        cid = call_id or self.newest()["id"]
        r = self.client.post(
            f"{self.prefix}/dev/phone/{cid}/{action}",
            json=body or {},
            headers={"Accept": "application/json", "X-CSRFToken": self._token()},
        )
        answer: dict[str, Any] = r.get_json(silent=True) or {}
        answer.setdefault("status_code", r.status_code)
        return answer


# -- the provider contract ---------------------------------------------------------------------


class Scenario(enum.StrEnum):
    """What the loopback vendor acts out for the requests that follow."""

    #: the person answers and does what the call asks (keys the PIN in, listens)
    ANSWER = "answer"
    #: the person declines the call
    DECLINE = "decline"
    #: the line is busy
    BUSY = "busy"
    #: the vendor refuses the number called
    BAD_NUMBER = "bad_number"
    #: the vendor answers HTTP 5xx
    SERVER_ERROR = "server_error"
    #: an answer in no documented shape (not JSON/XML, or the wrong fields)
    GARBAGE = "garbage"
    #: a hostile answer: an XML entity bomb or external entity, or absurdly nested JSON
    HOSTILE = "hostile"
    #: no answer before the provider's timeout
    HANG = "hang"


class ContractVendor(Protocol):
    """What a provider package's ``phoneverify_vendor`` fixture returns: its loopback
    vendor server, able to act out the contract's scenarios."""

    #: the address the provider's settings point at
    url: str
    #: the scenarios this vendor can act (the others' tests are skipped)
    scenarios: frozenset[Scenario]

    def act(self, scenario: Scenario, *, on: str = "place") -> None:
        """Act out ``scenario`` for the requests that follow: ``on="place"`` the
        requests that place calls (DECLINE and BUSY: the call placed next is declined
        or meets a busy line), ``on="status"`` the status requests."""

    def answer(self, keys: str | None) -> str | None:
        """The person answers the newest call and does what it asks: keys ``keys`` in
        (keypad style); returns the code the call spoke (spoken style), else None."""

    def events_to(self, url: str) -> None:
        """Where to post call events (the app's signed callback address); vendors that
        post none ignore it."""


class ProviderContract:
    """The provider contract suite. Subclass it in a test module (its name must start
    with ``Test``) and give it:

    - ``provider``: the provider class;
    - ``settings(url)``: the ``PHONEVERIFY_*`` settings that point the provider at
      the loopback vendor at ``url`` (credentials included);
    - a ``phoneverify_vendor`` fixture returning a :class:`ContractVendor`.

    Every test also checks that no credential (the values of the provider's settings
    declared ``secret``) reaches a log record or an error.
    """

    provider: ClassVar[type[Provider]]
    #: the number the contract's calls go to
    number: ClassVar[str] = NUMBER

    def settings(self, url: str) -> dict[str, Any]:
        """The PHONEVERIFY_* settings that point the provider at the vendor at ``url``."""
        raise NotImplementedError("a ProviderContract subclass defines settings(url)")

    # -- fixtures --------------------------------------------------------------------------
    @pytest.fixture
    def phoneverify_vendor(self) -> ContractVendor:
        raise NotImplementedError("a ProviderContract subclass defines phoneverify_vendor")

    @pytest.fixture(autouse=True)
    def phoneverify_no_credentials_logged(self, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
        caplog.set_level(logging.DEBUG)
        yield
        for record in caplog.records:
            if record.name.startswith("werkzeug"):
                continue  # the loopback vendor's own request lines
            text = record.getMessage() + (record.exc_text or "")
            for secret in self._secrets():
                assert secret not in text, f"a credential reached the log ({record.name})"

    @pytest.fixture
    def phoneverify_build(
        self, phoneverify_vendor: ContractVendor
    ) -> Iterator[Callable[..., Provider]]:
        """``build(style=None, **settings) -> provider`` built as init_app builds it."""
        from .settings import Settings, read_settings

        made: list[Provider] = []

        def build(style: Style | None = None, **extra: Any) -> Provider:
            config = {**self.settings(phoneverify_vendor.url), **extra}
            values = read_settings(config, self.provider.settings)
            prefix = f"PHONEVERIFY_{self.provider.name.upper()}_"
            options = Settings(values).prefixed(prefix)
            made.append(
                self.provider(
                    options,
                    style=style or self.provider.preferred_style,
                    pin_length=6,
                    app_name="Contract Test",
                )
            )
            return made[-1]

        yield build
        for provider in made:
            provider.close()

    @pytest.fixture
    def phoneverify_app(
        self, phoneverify_vendor: ContractVendor, tmp_path: Any
    ) -> Iterator[Callable[..., ContractApp]]:
        """``app(style) -> ContractApp``: an app on this provider, served on loopback
        (its vendor posts events there), with one user whose phone is the contract's
        number."""
        from contextlib import ExitStack

        with ExitStack() as stack:
            made: list[ContractApp] = []

            def factory(style: Style, **extra: Any) -> ContractApp:
                app = _contract_app(
                    tmp_path / f"app{len(made)}",
                    self.number,
                    {
                        **self.settings(phoneverify_vendor.url),
                        "PHONEVERIFY_STYLE": style.value,
                        **extra,
                    },
                )
                base = stack.enter_context(serve(app))
                made.append(ContractApp(app, base, self.provider.name))
                phoneverify_vendor.events_to(made[-1].callback_url())
                return made[-1]

            yield factory
            for each in made:
                each.close()

    # -- helpers -----------------------------------------------------------------------------
    def _secrets(self) -> list[str]:
        config = self.settings("http://127.0.0.1:1")
        return [
            str(config[s.name])
            for s in self.provider.settings
            if s.secret and config.get(s.name) not in (None, "") and len(str(config[s.name])) > 3
        ]

    def assert_clean(self, error: BaseException) -> None:
        """No credential in an error's text, message or detail."""
        texts = [str(error), getattr(error, "message", ""), getattr(error, "detail", "") or ""]
        for secret in self._secrets():
            assert not any(secret in t for t in texts), "a credential reached an error"

    def request(self, style: Style, pin: str = "482915") -> Any:
        """A call to place in ``style`` to the contract's number."""
        from .providers.base import CallRequest

        return CallRequest(
            number=self.number,
            pin=pin,
            style=style,
            call_id="c0ffee" + "0" * 26,
            app_name="Contract Test",
        )

    @staticmethod
    def _needs(vendor: ContractVendor, scenario: Scenario) -> None:
        if scenario not in vendor.scenarios:
            pytest.skip(f"the loopback vendor cannot act {scenario.value!r}")

    def _styles(self) -> list[Style]:
        from .providers.base import Style

        return [s for s in Style if s in self.provider.styles]

    def _place_failing(
        self, vendor: ContractVendor, build: Callable[..., Provider], scenario: Scenario, **kw: Any
    ) -> BaseException:
        from .errors import ProviderError

        self._needs(vendor, scenario)
        vendor.act(scenario)
        provider = build(**kw)
        with pytest.raises(ProviderError) as caught:
            provider.place_call(self.request(provider.style))
        self.assert_clean(caught.value)
        return caught.value

    # -- the contract: what the provider declares ------------------------------------------------
    def test_declares_a_name_styles_and_settings(self) -> None:
        """What init_app relies on: a lower-case name it is registered under, styles with the
        preferred one among them, settings under its own prefix."""
        from .providers import load
        from .providers.base import Provider, Style

        cls = self.provider
        assert issubclass(cls, Provider)
        assert cls.name and cls.name == cls.name.lower()
        assert cls.styles and cls.styles <= set(Style)
        assert cls.preferred_style in cls.styles
        prefix = f"PHONEVERIFY_{cls.name.upper()}_"
        assert all(s.name.startswith(prefix) for s in cls.settings), "settings under its prefix"
        assert load(cls.name) is cls, "registered under its name in flask_phoneverify.providers"

    # -- placing calls ---------------------------------------------------------------------------
    @pytest.mark.parametrize("style", ["keypad", "spoken", "delivery"])
    def test_places_a_call_in_each_style_it_declares(
        self,
        style: str,
        phoneverify_vendor: ContractVendor,
        phoneverify_build: Callable[..., Provider],
    ) -> None:
        """Every declared style places a call and hands back a reference to follow it."""
        from .providers.base import CallTicket, Style

        if Style(style) not in self.provider.styles:
            pytest.skip(f"{self.provider.name} does not declare {style}")
        phoneverify_vendor.act(Scenario.ANSWER)
        provider = phoneverify_build(Style(style))
        ticket = provider.place_call(self.request(Style(style)))
        assert isinstance(ticket, CallTicket)
        assert isinstance(ticket.reference, str) and ticket.reference

    def test_a_refused_number_is_rejected_not_retryable(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """A number the vendor refuses is ProviderRejected: never retried, never failed over."""
        from .errors import ProviderRejected

        error = self._place_failing(phoneverify_vendor, phoneverify_build, Scenario.BAD_NUMBER)
        assert isinstance(error, ProviderRejected) and not error.retryable

    def test_a_vendor_5xx_is_unavailable_and_retryable(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """A vendor outage is ProviderUnavailable: retryable; the next provider may place it."""
        from .errors import ProviderUnavailable

        error = self._place_failing(phoneverify_vendor, phoneverify_build, Scenario.SERVER_ERROR)
        assert isinstance(error, ProviderUnavailable) and error.retryable

    def test_a_garbage_answer_is_a_retryable_provider_error(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """An answer in no documented shape is a retryable ProviderError, never a crash."""
        error = self._place_failing(phoneverify_vendor, phoneverify_build, Scenario.GARBAGE)
        assert getattr(error, "retryable", False)

    def test_a_hostile_answer_is_refused_unread(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """An entity bomb or absurd nesting is refused without being expanded."""
        error = self._place_failing(phoneverify_vendor, phoneverify_build, Scenario.HOSTILE)
        assert "lol" not in str(getattr(error, "detail", "") or "").lower()

    def test_a_timeout_is_unavailable_and_retryable(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """A vendor that does not answer in time is ProviderUnavailable."""
        from .errors import ProviderUnavailable

        key = f"PHONEVERIFY_{self.provider.name.upper()}_TIMEOUT"
        if not any(s.name == key for s in self.provider.settings):
            pytest.skip(f"{self.provider.name} declares no {key}")
        error = self._place_failing(
            phoneverify_vendor, phoneverify_build, Scenario.HANG, **{key: 0.3}
        )
        assert isinstance(error, ProviderUnavailable) and error.retryable

    def test_a_garbage_status_answer_is_a_retryable_provider_error(
        self, phoneverify_vendor: ContractVendor, phoneverify_build: Callable[..., Provider]
    ) -> None:
        """A garbage status answer is retryable (PHONEVERIFY_MAX_POLL_ERRORS counts them)."""
        from .errors import ProviderError
        from .providers.base import PlacedCall

        if not self.provider.polled:
            pytest.skip(f"{self.provider.name} is not polled")
        self._needs(phoneverify_vendor, Scenario.GARBAGE)
        phoneverify_vendor.act(Scenario.ANSWER)
        provider = phoneverify_build()
        request = self.request(provider.style)
        ticket = provider.place_call(request)
        phoneverify_vendor.act(Scenario.GARBAGE, on="status")
        placed = PlacedCall(ticket.reference, request.call_id, request.number, provider.style)
        with pytest.raises(ProviderError) as caught:
            provider.call_status(placed)
        assert caught.value.retryable
        self.assert_clean(caught.value)

    # -- whole verifications through an app --------------------------------------------------------
    @pytest.mark.parametrize("style", ["keypad", "spoken", "delivery"])
    def test_a_whole_verification_in_each_style_it_declares(
        self,
        style: str,
        phoneverify_vendor: ContractVendor,
        phoneverify_app: Callable[..., ContractApp],
    ) -> None:
        """The person answers and confirms; the gate opens: the provider works end to end."""
        from .providers.base import Style

        if Style(style) not in self.provider.styles:
            pytest.skip(f"{self.provider.name} does not declare {style}")
        phoneverify_vendor.act(Scenario.ANSWER)
        app = phoneverify_app(Style(style))
        started = app.start()
        assert app.client.get("/secret").status_code != 200
        heard = phoneverify_vendor.answer(started.get("pin"))
        if Style(style) is Style.SPOKEN:
            assert heard, "the vendor reports the code the call spoke"
            answer = app.confirm(heard)  # typed on the page as soon as it is heard
        else:
            app.wait(lambda s: s["status"] != "calling")
            answer = app.confirm(None)
        assert answer["status"] == "verified", answer
        assert app.client.get("/secret").status_code == 200

    @pytest.mark.parametrize("scenario", [Scenario.DECLINE, Scenario.BUSY])
    def test_a_declined_or_busy_call_fails_the_verification_with_a_reason(
        self,
        scenario: Scenario,
        phoneverify_vendor: ContractVendor,
        phoneverify_app: Callable[..., ContractApp],
    ) -> None:
        """A declined or busy call fails the verification with a reason the user can read."""
        self._needs(phoneverify_vendor, scenario)
        phoneverify_vendor.act(scenario)
        app = phoneverify_app(self.provider.preferred_style)
        started = app.start()
        phoneverify_vendor.answer(started.get("pin"))
        status = app.wait(lambda s: s["status"] != "calling")
        assert status["status"] == "failed" and status["message"], status
        for secret in self._secrets():
            assert secret not in str(status)

    def test_a_failed_start_answers_a_clear_json_error(
        self, phoneverify_vendor: ContractVendor, phoneverify_app: Callable[..., ContractApp]
    ) -> None:
        """A start the vendor fails answers 503 {error, message, retryable}, no credential."""
        self._needs(phoneverify_vendor, Scenario.SERVER_ERROR)
        phoneverify_vendor.act(Scenario.SERVER_ERROR)
        app = phoneverify_app(self.provider.preferred_style)
        r = app.post("/start", {})
        assert r.status_code == 503, r.data
        body = r.get_json()
        assert body["error"] == "provider_error" and body["message"] and body["retryable"]
        for secret in self._secrets():
            assert secret not in r.get_data(as_text=True)

    def test_a_callback_to_an_unsigned_address_is_refused(
        self, phoneverify_app: Callable[..., ContractApp]
    ) -> None:
        """Events posted to an address we did not sign are refused."""
        app = phoneverify_app(self.provider.preferred_style)
        prefix = f"/phoneverify/callback/{self.provider.name}/"
        r = app.client.post(prefix + "forged-token", data=b"<x/>", content_type="text/xml")
        assert r.status_code in (400, 403, 404)


class ContractApp:
    """An app on the provider under test, and a logged-in client of it."""

    def __init__(self, app: Flask, base: str, provider: str) -> None:
        self.app = app
        self.base = base
        self.provider = provider
        self.client = app.test_client()
        self.client.environ_base["HTTP_X_TEST_USER"] = "1"
        self.token: str | None = None
        self.csrf: str | None = None

    def callback_url(self) -> str:
        from .state import state
        from .views.callbacks import callback_address

        with self.app.test_request_context(base_url=self.base):
            return callback_address(state(self.app), self.provider)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        if self.csrf is None:
            r = self.client.get("/phoneverify/", headers={"Accept": "application/json"})
            self.csrf = r.get_json()["csrf_token"]
        return self.client.post(
            "/phoneverify" + path,
            json=body,
            headers={"Accept": "application/json", "X-CSRFToken": self.csrf or ""},
        )

    def start(self) -> dict[str, Any]:
        r = self.post("/start", {})
        assert r.status_code == 200, r.get_data(as_text=True)
        body: dict[str, Any] = r.get_json()
        self.token = body["token"]
        return body

    def status(self) -> dict[str, Any]:
        r = self.client.get(
            f"/phoneverify/status?token={self.token}", headers={"Accept": "application/json"}
        )
        assert r.status_code == 200, r.get_data(as_text=True)
        body: dict[str, Any] = r.get_json()
        return body

    def wait(self, done: Callable[[dict[str, Any]], bool], tries: int = 200) -> dict[str, Any]:
        """The status once ``done`` holds (polled as the wait page does)."""
        for _ in range(tries):
            status = self.status()
            if done(status):
                return status
            time.sleep(0.05)
        raise AssertionError(f"the verification never got there: {status}")

    def confirm(self, pin: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"token": self.token}
        if pin is not None:
            body["pin"] = pin
        answer: dict[str, Any] = self.post("/confirm", body).get_json()
        return answer

    def close(self) -> None:
        from .state import state

        state(self.app).close()


def _contract_app(instance: Any, number: str, config: dict[str, Any]) -> Flask:
    """A small app: user "1" (sent as the X-Test-User header) has ``number``; /secret
    is gated; nothing is read from the environment."""
    from flask import Flask, request

    from . import PhoneVerify, phone_verified_required

    class User:
        def __init__(self, uid: str, phone: str) -> None:
            self.id, self.phone, self.is_authenticated = uid, phone, True

        def get_id(self) -> str:
            return self.id

    users = {"1": User("1", number)}
    app = Flask("phoneverify_contract", instance_path=str(instance))
    app.config.update(
        TESTING=True,
        SECRET_KEY=secrets.token_hex(32),
        PHONEVERIFY_DATABASE_URI=f"sqlite:///{instance}/pv.sqlite3",
        PHONEVERIFY_NUMBER_COOLDOWN=0,
        PHONEVERIFY_POLL_INTERVAL=0,
        **config,
    )
    ext = PhoneVerify()
    ext.user_loader(lambda: users.get(request.headers.get("X-Test-User", "")))
    ext.init_app(app)

    @app.get("/secret")
    @phone_verified_required
    def secret() -> str:
        return "the secret"

    return app
