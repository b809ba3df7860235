"""What every provider does with what a vendor says, and with how a request failed.

One place for four jobs the providers share:

- **Redaction** (:class:`Redactor`): a provider's secrets (credentials, and per
  call the number and the PIN) are cut out of any vendor text kept for a log or
  an error's ``detail``, and long digit runs (phone numbers) are masked.
- **Cleaning** (:func:`clean`): vendor text made fit for a log line: one line
  when asked, no control characters, whitespace collapsed, bounded in length.
  Redaction comes first, so a secret cut at the length bound cannot leave a
  readable prefix behind.
- **Classifying** (:class:`ErrorWords`): vendors whose error text is free-form
  and uncoded have it sorted by a few words into whose problem it is: our
  account or settings (:class:`ProviderConfigError`), the number
  (:class:`ProviderRejected`), or something the provider decides.
- **Blaming the provider** (:func:`provider_fault`): whether a failure to place
  a call is the provider's fault (another provider may place it) or the number's
  (no provider will).
- **Mapping failures** (:func:`unreachable`, :func:`http_status_error`,
  :func:`too_large`, :func:`soap_fault`): a network failure, an HTTP status, an
  oversized answer or a SOAP fault becomes the same
  :class:`~flask_phoneverify.errors.ProviderError` with the same user message
  whichever client met it (httpx in :mod:`.transport`, zeep's requests session
  in :mod:`.phoneconfirm`). Callers pass what they saw (a status, whether it was
  a timeout, the exception's class name), so this module imports no client
  library and every provider can use it.

Messages (``message``) are written for users and carry nothing the vendor said;
``detail`` carries cleaned, redacted vendor text for the log.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from ..errors import (
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from ..i18n import gettext

__all__ = [
    "MASK",
    "NUMBER_MASK",
    "MAX_DETAIL",
    "Redactor",
    "clean",
    "Blame",
    "ErrorWords",
    "unreachable",
    "http_status_error",
    "too_large",
    "soap_fault",
    "without_query",
    "provider_fault",
]

MASK = "[redacted]"
NUMBER_MASK = "[number]"
#: the longest vendor text kept in a detail
MAX_DETAIL = 300

_LONG_DIGITS = re.compile(r"\+?[0-9]{7,}")


# -- redaction and cleaning ----------------------------------------------------------------


class Redactor:
    """A provider's secrets, to cut out of vendor text before it is kept.

    Built once per provider from its credentials (plain strings, or patterns for
    a secret a vendor may echo in another form, such as a GUID without dashes);
    a call adds its own (the number, the PIN) as ``extra``.
    """

    def __init__(self, *secrets: str | re.Pattern[str] | None, mask: str = MASK) -> None:
        self.mask = mask
        self._texts = sorted((s for s in secrets if isinstance(s, str) and s), key=len)[::-1]
        self._patterns = [s for s in secrets if isinstance(s, re.Pattern)]

    def __call__(self, text: str, *extra: str | None, numbers: bool = True) -> str:
        """``text`` with the secrets replaced by the mask; with ``numbers``, digit runs
        of seven or more (phone numbers) replaced by ``[number]`` too."""
        texts = sorted({*self._texts, *(e for e in extra if e)}, key=len, reverse=True)
        for secret in texts:
            text = text.replace(secret, self.mask)
        for pattern in self._patterns:
            text = pattern.sub(self.mask, text)
        return _LONG_DIGITS.sub(NUMBER_MASK, text) if numbers else text

    def clean(
        self, text: str, *extra: str | None, limit: int = MAX_DETAIL, first_line: bool = False
    ) -> str:
        """Vendor text for a detail: redacted first, then cleaned (see :func:`clean`)."""
        if first_line:
            text = _first_line(text)
        return clean(self(text, *extra), limit=limit)


def clean(text: str, *, limit: int = MAX_DETAIL, first_line: bool = False) -> str:
    """Vendor text fit for a log line: control characters out, whitespace collapsed,
    at most ``limit`` characters (an ellipsis marks a cut). It redacts nothing: text
    that may hold a secret goes through :meth:`Redactor.clean`."""
    if first_line:
        text = _first_line(text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_line(text: str) -> str:
    """The first line: services such as .asmx append stack traces below it."""
    stripped = text.strip()
    return stripped.splitlines()[0] if stripped else ""


# -- classifying a vendor's error text ----------------------------------------------------------


class Blame(enum.Enum):
    """Whose problem a vendor's error text is about."""

    ACCOUNT = "account"  # our account or settings
    NUMBER = "number"  # the number called
    UNKNOWN = "unknown"  # neither: the provider decides


@dataclass(frozen=True)
class ErrorWords:
    """How one vendor's uncoded error text is sorted: words (matched without regard
    to case) that blame our account or settings, then words that blame the number.

    Pass text with the provider's secrets already cut out (``Redactor(...,
    numbers=False)``), so a credential cannot happen to spell one of the words.
    """

    account: tuple[str, ...]
    number: tuple[str, ...]
    #: added to an account error's detail: which settings to check
    fix: str | None = None
    #: a refused number's user message (marked with ``N_``, translated when raised);
    #: None: ProviderRejected's own
    number_message: str | None = None

    def blame(self, text: str) -> Blame:
        """Whose fault ``text`` says it is: the account's, the number's, or neither."""
        lowered = text.lower()
        if any(word.lower() in lowered for word in self.account):
            return Blame.ACCOUNT
        if any(word.lower() in lowered for word in self.number):
            return Blame.NUMBER
        return Blame.UNKNOWN

    def account_error(self, detail: str) -> ProviderConfigError:
        """The error for a refusal of our account or settings."""
        return ProviderConfigError(detail=f"{detail}; {self.fix}" if self.fix else detail)

    def number_error(self, detail: str) -> ProviderRejected:
        """The error for a refusal of the number called."""
        message = gettext(self.number_message) if self.number_message else None
        return ProviderRejected(message, detail=detail)

    def classify(self, text: str, detail: str, otherwise: ProviderError) -> ProviderError:
        """The error ``text`` means; ``otherwise`` when its words blame neither side."""
        blame = self.blame(text)
        if blame is Blame.ACCOUNT:
            return self.account_error(detail)
        if blame is Blame.NUMBER:
            return self.number_error(detail)
        return otherwise


# -- mapping transport failures ----------------------------------------------------------------


def unreachable(vendor: str, where: str, *, timed_out: bool, cause: str) -> ProviderUnavailable:
    """A request that got no answer: a timeout, or a connection that failed.

    ``cause`` is the exception's class name; ``where`` says which request
    (method or operation and an address without its query)."""
    if timed_out:
        return ProviderUnavailable(
            gettext("%(vendor)s did not answer in time. Please try again.", vendor=vendor),
            detail=f"{cause} on {where}",
        )
    return ProviderUnavailable(
        gettext("%(vendor)s could not be reached. Please try again in a moment.", vendor=vendor),
        detail=f"{cause} on {where}",
    )


def http_status_error(
    status: int, *, vendor: str, where: str, errors_in_body: bool = True, note: str = ""
) -> ProviderError | None:
    """The ProviderError an HTTP status means, or None when the answer is the provider's
    to read.

    5xx is an outage (retryable) and 401/403 a refused account, for every vendor.
    ``errors_in_body``: the vendor explains its own 4xx answers in the body (JSON
    and XML APIs), so those are left to the provider. A SOAP service answers 200,
    or a fault with 500 (which its caller reads before asking here), so with
    ``errors_in_body`` false any other 3xx/4xx is a request it refused (408 and
    429 being retryable) and anything else an answer we cannot read. ``note`` is
    added to the detail (content type, size).
    """
    detail = f"HTTP {status} on {where}" + (f" ({note})" if note else "")
    if status >= 500 or (not errors_in_body and status in (408, 429)):
        return ProviderUnavailable(
            gettext(
                "%(vendor)s is having trouble right now. Please try again in a moment.",
                vendor=vendor,
            ),
            detail=detail,
        )
    if status in (401, 403):
        return ProviderConfigError(detail=detail)
    if errors_in_body or status == 200:
        return None
    if 300 <= status < 500:
        return ProviderConfigError(_refused_request(vendor), detail=detail)
    return ProviderProtocolError(detail=detail)


def too_large(vendor: str, size: int, where: str) -> ProviderProtocolError:
    """An answer over the size we read."""
    return ProviderProtocolError(detail=f"{vendor} answered {size} bytes to {where}")


def soap_fault(vendor: str, where: str, code: str | None, text: str) -> ProviderError:
    """A SOAP fault (``text`` already cleaned and redacted): ``Client``/``Sender``
    means the service could not take our request (retrying will not help);
    ``Server`` or anything else, that the method failed (it may work later)."""
    detail = f"{where}: {code or 'no faultcode'} fault: {text}"
    if (code or "").rpartition(":")[2] in ("Client", "Sender"):
        return ProviderConfigError(_refused_request(vendor), detail=detail)
    return ProviderUnavailable(
        gettext(
            "%(vendor)s could not handle the call just now. Please try again in a moment.",
            vendor=vendor,
        ),
        detail=detail,
    )


def _refused_request(vendor: str) -> str:
    return gettext(
        "%(vendor)s refused the request this site sent. Please tell the site's operators.",
        vendor=vendor,
    )


def without_query(url: str) -> str:
    """An address for a log line: its query may hold credentials."""
    return url.split("?", 1)[0]


def provider_fault(error: ProviderError) -> bool:
    """Whether placing a call failed through the provider's fault, so the next provider
    listed in PHONEVERIFY_PROVIDER may place it instead: a timeout, a refused connection,
    a 5xx, an answer we cannot read, or our account refused by this provider. A number
    the provider refused (:class:`ProviderRejected`) would be refused elsewhere too, and
    calling it again through another provider only rings a wrong number twice."""
    return not isinstance(error, ProviderRejected)
