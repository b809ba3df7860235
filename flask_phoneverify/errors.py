"""Every error the extension raises on purpose.

::

    PhoneVerifyError
    ├── ConfigError               init_app: a setting is wrong; names the key and the fix
    ├── ProviderError             the provider failed; ``retryable``: may trying again help?
    │   ├── ProviderUnavailable   connection refused, timeout, HTTP 5xx: retryable
    │   ├── ProviderRejected      the provider refused this call (bad number, line type...)
    │   ├── ProviderConfigError   the provider refused our account or settings: not retryable
    │   └── ProviderProtocolError the answer did not match the documented format
    └── FlowError                 a request the flow refuses; carries an HTTP status and a code
        (BadInput 400, WrongPin 400, Forbidden 403, CallRefused 403, NotOpen 409,
         Locked 429, RateLimited 429, CountryPaused 429)

A :class:`ProviderError`'s ``message`` is safe to show a user; ``detail`` is for
the log and the audit trail only and never reaches a page.
"""

from __future__ import annotations

from .i18n import N_, gettext


class PhoneVerifyError(Exception):
    """Base of every error raised by flask-phoneverify, so an app can catch them all at once."""


class ConfigError(PhoneVerifyError, ValueError):
    """A setting has a wrong value; the message names the key and how to fix it."""

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key = key
        super().__init__(f"{key} {problem}: {fix}.")


class ProviderError(PhoneVerifyError):
    """The provider could not place or follow a call.

    ``message`` is written for the user; ``detail`` (vendor error codes, fault
    strings) is for logs only; ``retryable`` says whether trying again may help.
    """

    retryable = False
    default_message = N_("The phone service could not place the call.")

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        # a class's own message is marked for the catalogs and translated when raised
        self.message = message or gettext(self.default_message)
        self.detail = detail
        super().__init__(self.message)


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or failed on its side; trying again may work."""

    retryable = True
    default_message = N_(
        "The phone service is not answering right now. Please try again in a moment."
    )


class ProviderRejected(ProviderError):
    """The provider refused this call; the same call will be refused again."""

    default_message = N_("The phone service could not call this number.")


class ProviderConfigError(ProviderError):
    """The provider refused our account or settings: only the operators can fix it."""

    default_message = N_(
        "The phone service refused this site's account settings. Please tell the site's operators."
    )


class ProviderProtocolError(ProviderError):
    """The provider's answer did not match its documented format; we never guess what it
    meant, and a fresh try may get a readable one."""

    retryable = True
    default_message = N_("The phone service gave an answer we could not read. Please try again.")


class FlowError(PhoneVerifyError):
    """A request the flow refuses, with the HTTP status and a machine-readable code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, retry_after: int | None = None, **extra: object) -> None:
        self.message = message
        self.retry_after = retry_after
        self.extra = extra
        super().__init__(message)


class BadInput(FlowError):
    """The request is malformed or names something we will not act on."""

    status, code = 400, "bad_request"


class WrongPin(FlowError):
    """The PIN did not match; the user may try again until the attempts run out."""

    status, code = 400, "wrong_pin"


class Forbidden(FlowError):
    """The request belongs to another user or browser session, or reached a callback
    address we did not sign."""

    status, code = 403, "forbidden"


class NotFound(FlowError):
    """Nothing of this user's by that name (another user's is not revealed as theirs)."""

    status, code = 404, "not_found"


class NotOpen(FlowError):
    """The verification is finished, expired or in another state, so this step no longer
    applies."""

    status, code = 409, "not_open"


class Locked(FlowError):
    """Too many wrong PINs: the verification no longer accepts any."""

    status, code = 429, "locked"


class RateLimited(FlowError):
    """A call limit is reached; ``retry_after`` says when a new call may be asked.

    ``limit`` names the limit for metrics and logs (never shown to the user)."""

    status, code = 429, "rate_limited"
    limit = "limit"

    def limited(self, limit: str) -> RateLimited:
        """This error, naming the limit it broke."""
        self.limit = limit
        return self


class CountryPaused(RateLimited):
    """The fraud guard paused calls to this country: too few of its recent calls were
    confirmed (a sign of toll fraud); ``retry_after`` says when the pause ends."""

    code = "country_paused"
    limit = "country_paused"
    #: the guard's decision when this very start paused the country (recorded with the
    #: refusal, announced once)
    pause: object | None = None


class CallRefused(FlowError):
    """Raised by an app's ``@phoneverify.before_call`` function to refuse a call; the user
    reads ``message`` (403 ``call_refused``), and no call is counted or placed."""

    status, code = 403, "call_refused"
    default_message = N_("This call cannot be placed.")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or gettext(self.default_message))
