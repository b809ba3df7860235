"""Veratad PhoneMatch5.0.Dialer over httpx: a pre-recorded message, delivery style only.

The dialer plays an audio file that Veratad holds for the account and reports
whether it was delivered. It cannot speak a PIN or collect one, so a delivered
call proves that a line answered, not that the user holds the phone: the
provider offers only the ``delivery`` style, which an app must choose
explicitly (``PHONEVERIFY_STYLE = "delivery"``; init_app warns about it).

Wire format (Veratad's "Dialer" page for PhoneMatch5.0.Dialer; where it is silent,
the choices are marked "pinned"):

- start: ``POST {url}/process/comprehensive/gateway`` with the JSON body
  ``{"user", "pass", "service": "PhoneMatch5.0.Dialer", "reference",
  "options": {"outofband": {"message", "do_not_send_to_types": [...]}},
  "target": {"phone"}}``. ``reference`` is our random call id; ``target.phone``
  is the 10-digit national number for +1 numbers (Veratad's examples) and the
  digits with the country code otherwise (pinned choice).
- the answer: ``{"meta": {...}, "result": {"action", "detail", "issues"},
  "continuations": {"outofband": {"template": {"token"}, ...}}}``. ``PENDING``
  means the message was sent; the token in
  ``continuations.outofband.template.token`` is the call's reference.
- status: ``POST {url}/process/continue`` with ``{"dialer": {"return":
  "status"}, "token": ...}``, asked at most once per PHONEVERIFY_POLL_INTERVAL.
  The same token is sent each time, as Veratad's own Magento client does (its
  status cron job), unless a PENDING answer returns a template with a token of
  its own: the Dialer page says to "take the template returned and submit
  again", so that one is used from then on.
- actions: ``PASS`` (ALL CHECKS PASSED) is a delivered call; ``PENDING`` is a
  call still in progress; ``FAIL`` carries one of the documented details,
  each turned into a reason a user can act on (line type suppressed, could not
  send, invalid number, could not be delivered).
- errors: ``{"error": {"code", "message", "detail"}}`` instead of ``result``
  (as Veratad's WooCommerce client reads them). **Assumption**: no error codes
  are documented, so an error whose text is about the user, password,
  credentials, account or service is our account's (ProviderConfigError); one
  about the phone or target is the number's; any other is a refused call
  (``vendor.ErrorWords``).

The password travels only in the request body, which nothing logs; error
details are scrubbed of it anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderProtocolError,
    ProviderRejected,
)
from ..i18n import N_, gettext
from ..phone import split
from ..settings import Setting
from . import transport
from .base import (
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    Outcome,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)
from .vendor import ErrorWords, Redactor

__all__ = ["Veratad", "DEFAULT_URL", "GATEWAY", "CONTINUE", "SERVICE", "LINE_TYPES", "target_phone"]

VENDOR = "Veratad"
DEFAULT_URL = "https://production.idresponse.com"
GATEWAY = "/process/comprehensive/gateway"
CONTINUE = "/process/continue"
SERVICE = "PhoneMatch5.0.Dialer"
#: the line types Veratad's own client offers for do_not_send_to_types (m2-app PhoneType.php)
LINE_TYPES = ("voip", "mobile", "landline")
_LINE_NAMES = {"voip": N_("internet (VoIP)"), "mobile": N_("mobile"), "landline": N_("landline")}

NUMBER_REFUSED = N_(
    "The phone service could not call this number. Please check it, or use another number."
)
CALL_REFUSED = N_("The phone service refused to place the call. Please try again later.")

#: words of an error's text that blame our account, then the number
ERROR_WORDS = ErrorWords(
    account=(
        "auth",
        "credential",
        "user",
        "pass",
        "login",
        "account",
        "permission",
        "denied",
        "forbidden",
        "service",
        "key",
    ),
    number=("phone", "target", "number"),
    fix="check PHONEVERIFY_VERATAD_USER and PHONEVERIFY_VERATAD_PASSWORD",
    number_message=NUMBER_REFUSED,
)


def target_phone(e164: str) -> str:
    """``target.phone``: 10 digits for +1 numbers, digits with the country code otherwise."""
    country_code, national = split(e164)
    return national if country_code == "1" else country_code + national


class Veratad(Provider):
    """Veratad PhoneMatch Dialer: plays a recorded message and reports delivery only
    (the opt-in delivery style)."""

    name = "veratad"
    styles = frozenset({Style.DELIVERY})
    preferred_style = Style.DELIVERY
    polled = True
    settings = (
        Setting(
            "PHONEVERIFY_VERATAD_USER",
            None,
            "str",
            "Veratad API user (an email address).",
            required=True,
        ),
        Setting(
            "PHONEVERIFY_VERATAD_PASSWORD",
            None,
            "str",
            "Veratad API password (never logged).",
            required=True,
            secret=True,
        ),
        Setting(
            "PHONEVERIFY_VERATAD_MESSAGE",
            None,
            "str",
            "Name Veratad gave the audio file the call plays (options.outofband.message).",
            required=True,
        ),
        Setting(
            "PHONEVERIFY_VERATAD_DO_NOT_SEND_TO_TYPES",
            [],
            "list",
            "Line types never called: any of voip, mobile, landline; empty: call all.",
        ),
        Setting("PHONEVERIFY_VERATAD_URL", DEFAULT_URL, "str", "Base URL of Veratad's API."),
        timeout_setting("veratad", "Veratad"),
    )

    def __init__(
        self, options: Mapping[str, Any], *, style: Style, pin_length: int, app_name: str
    ) -> None:
        super().__init__(options, style=style, pin_length=pin_length, app_name=app_name)
        if style is not Style.DELIVERY:
            raise ConfigError(
                "PHONEVERIFY_STYLE",
                f"is {style.value!r}, but Veratad's dialer only plays a recording and reports "
                "its delivery",
                "set it to 'delivery' (it proves a line answered, not who holds it), "
                "or choose a provider that can do keypad or spoken",
            )
        self.base_url = check_url(self.option_key("url"), options.get("url"), DEFAULT_URL)
        self.user = str(options.get("user") or "")
        self.password = str(options.get("password") or "")
        self.message = str(options.get("message") or "")
        for option, value in (
            ("user", self.user),
            ("password", self.password),
            ("message", self.message),
        ):
            if not value:
                raise ConfigError(
                    self.option_key(option), "is empty", "set it from your Veratad account"
                )
        self._redact = Redactor(self.password, mask="***")
        self.do_not_send_to_types = self._line_types(options.get("do_not_send_to_types") or [])
        self.client = transport.make_client(float(options.get("timeout") or 10.0))

    def _line_types(self, raw: list[str]) -> list[str]:
        key = self.option_key("do_not_send_to_types")
        types: list[str] = []
        for item in raw:
            kind = item.strip().lower()
            if kind not in LINE_TYPES:
                raise ConfigError(key, f"has {item!r}", f"use any of: {', '.join(LINE_TYPES)}")
            if kind not in types:
                types.append(kind)
        if len(types) == len(LINE_TYPES):
            raise ConfigError(
                key,
                "excludes every line type, so no call would go out",
                "leave at least one of voip, mobile, landline out",
            )
        return types

    # -- calls --------------------------------------------------------------------------------
    def place_call(self, request: CallRequest) -> CallTicket:
        """Start the dialer; the continuation token follows the call."""
        body = {
            "user": self.user,
            "pass": self.password,
            "service": SERVICE,
            "reference": request.call_id,
            "options": {
                "outofband": {
                    "message": self.message,
                    "do_not_send_to_types": list(self.do_not_send_to_types),
                }
            },
            "target": {"phone": target_phone(request.number)},
        }
        answer = self._post(GATEWAY, body)
        action, detail = _result(answer)
        if action == "FAIL":
            raise ProviderRejected(self._reason(detail), detail=f"Veratad gateway: FAIL {detail}")
        if action not in ("PENDING", "PASS"):
            raise ProviderProtocolError(detail=f"Veratad gateway: action {action[:30]!r}")
        call = CallState.DELIVERED if action == "PASS" else CallState.RINGING
        return CallTicket(reference=_token(answer), call=call)

    def call_status(self, call: PlacedCall) -> CallReport:
        if not call.reference:
            raise ProviderProtocolError(detail="Veratad continue: the call has no token")
        answer = self._post(CONTINUE, {"dialer": {"return": "status"}, "token": call.reference})
        action, detail = _result(answer)
        note = f"Veratad continue: {action} {detail}".strip()
        if action == "PASS":
            return CallReport(call=CallState.DELIVERED, outcome=Outcome.CONFIRMED, detail=note)
        if action == "PENDING":  # "take the template returned and submit again"
            renewed = _token(answer) if _has_token(answer) else None
            return CallReport(
                call=CallState.RINGING, outcome=Outcome.PENDING, detail=note, reference=renewed
            )
        if action == "FAIL":
            return CallReport(
                call=CallState.ENDED,
                outcome=Outcome.FAILED,
                reason=self._reason(detail),
                detail=note,
            )
        raise ProviderProtocolError(detail=f"Veratad continue: action {action[:30]!r}")

    def close(self) -> None:
        self.client.close()

    # -- the wire -------------------------------------------------------------------------------
    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = transport.send(
            self.client, "POST", self.base_url + path, vendor=VENDOR, json=body
        )
        try:
            answer = transport.parse_json(response, vendor=VENDOR)
        except ProviderProtocolError:
            if response.status_code in (404, 405):
                raise ProviderConfigError(
                    detail=f"HTTP {response.status_code} from Veratad on POST {path}; "
                    "check PHONEVERIFY_VERATAD_URL"
                ) from None
            raise
        if not isinstance(answer, dict):
            raise ProviderProtocolError(
                detail=f"Veratad answered {type(answer).__name__} on {path}"
            )
        if isinstance(answer.get("error"), dict):
            self._raise_error(path, answer["error"], response)
        if response.status_code >= 400:
            raise ProviderProtocolError(
                detail=f"HTTP {response.status_code} from Veratad on {path}"
            )
        return answer

    def _raise_error(self, path: str, error: dict[str, Any], response: httpx.Response) -> None:
        said = [str(error[k]) for k in ("code", "message", "detail") if error.get(k)]
        text = " ".join(self._redact.clean(part, limit=200) for part in said)
        detail = f"Veratad error on {path} (HTTP {response.status_code}): {text}"
        words = self._redact(" ".join(said), numbers=False)
        refused = ProviderRejected(gettext(CALL_REFUSED), detail=detail)
        raise ERROR_WORDS.classify(words, detail, refused)

    def _reason(self, detail: str) -> str:
        """A FAIL's documented detail as something the user can act on, in the asking
        request's language (Veratad is polled from the person's own requests)."""
        if detail == "SUPPRESSED SENDING CODE":
            if not self.do_not_send_to_types:
                return gettext(
                    "Calls to this kind of line are not accepted here. Please use another number."
                )
            kinds = gettext(" or ").join(gettext(_LINE_NAMES[t]) for t in self.do_not_send_to_types)
            return gettext(
                "Calls to %(kinds)s lines are not accepted here. Please use another number.",
                kinds=kinds,
            )
        if detail == "FAILED TO SEND TO NUMBER":
            return gettext("The call to your phone could not be placed. Please try again.")
        if detail == "DATA CHECK FAILED":
            return gettext(
                "This phone number is not valid. Please check it, or use another number."
            )
        if detail == "MESSAGE COULD NOT BE DELIVERED":
            return gettext("The call could not be delivered to your phone. Please try again.")
        return gettext(NUMBER_REFUSED)


def _result(answer: dict[str, Any]) -> tuple[str, str]:
    """``result.action`` (upper case) and ``result.detail``."""
    result = answer.get("result")
    action = result.get("action") if isinstance(result, dict) else None
    if not isinstance(action, str) or not action.strip():
        raise ProviderProtocolError(detail="Veratad answered without result.action")
    detail = result.get("detail") if isinstance(result, dict) else None
    return action.strip().upper(), detail.strip().upper()[:100] if isinstance(detail, str) else ""


def _has_token(answer: dict[str, Any]) -> bool:
    try:
        _token(answer)
    except ProviderProtocolError:
        return False
    return True


def _token(answer: dict[str, Any]) -> str:
    """``continuations.outofband.template.token``: the handle for the status requests."""
    node: Any = answer
    for key in ("continuations", "outofband", "template", "token"):
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, str) or not node.strip():
        raise ProviderProtocolError(detail="Veratad answered without a continuation token")
    return node.strip()
