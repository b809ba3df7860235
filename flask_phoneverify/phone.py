"""Phone numbers: parse what a person typed to E.164, apply the calling policy
(allowed countries, refused number types) before any provider is called, and
mask numbers for logs and pages."""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberType

from .errors import BadInput, ConfigError
from .i18n import gettext

__all__ = [
    "parse",
    "ascii_digits",
    "split",
    "mask",
    "check_policy",
    "check_non_geographic",
    "country_of",
    "check_calling_code",
    "check_type_names",
    "check_regions",
    "check_regions_reachable",
    "supported_regions",
]

#: longest typed number accepted: phonenumbers' parser need not see pasted junk
MAX_INPUT = 40

_TYPE_NAMES = {
    name: getattr(PhoneNumberType, name)
    for name in dir(PhoneNumberType)
    if name.isupper() and isinstance(getattr(PhoneNumberType, name), int)
}


def check_type_names(key: str, names: Iterable[str]) -> frozenset[int]:
    """The phonenumbers type constants for ``names``, checked once in ``init_app`` so a
    misspelt refused type fails at start (naming ``key``) instead of letting such numbers
    through."""
    out = set()
    for name in names:
        if name.upper() not in _TYPE_NAMES:
            raise ConfigError(
                key, f"has {name!r}", f"use names from: {', '.join(sorted(_TYPE_NAMES))}"
            )
        out.add(_TYPE_NAMES[name.upper()])
    return frozenset(out)


def check_regions(key: str, regions: Iterable[str]) -> frozenset[str]:
    """``regions`` upper-cased, checked once in ``init_app`` so a misspelt allowed country
    fails at start (naming ``key``) instead of silently refusing every call there."""
    known = phonenumbers.SUPPORTED_REGIONS
    out = set()
    for region in regions:
        if region.upper() not in known:
            raise ConfigError(
                key, f"has {region!r}", "use ISO 3166 alpha-2 region codes such as 'US'"
            )
        out.add(region.upper())
    return frozenset(out)


def check_regions_reachable(
    key: str, regions: frozenset[str], codes: frozenset[int] | None
) -> None:
    """ConfigError when an allowed region is one the provider cannot call, so the operator
    learns it at start rather than from users whose calls are refused."""
    if codes is None:
        return
    unreachable = sorted(r for r in regions if phonenumbers.country_code_for_region(r) not in codes)
    if unreachable:
        reach = ", ".join(f"+{c}" for c in sorted(codes))
        raise ConfigError(
            key,
            f"has {', '.join(unreachable)}, which the provider cannot call (it reaches {reach})",
            "remove them, or choose a provider that calls there",
        )


@functools.lru_cache(maxsize=4096)
def _number(e164: str) -> phonenumbers.PhoneNumber:
    """A stored E.164 number, parsed once per process (never modified by callers)."""
    return phonenumbers.parse(e164, None)


def parse(text: str, default_region: str | None) -> str:
    """A typed number as E.164, the one form stored, limited and sent to providers; BadInput
    with a message a user can act on when it is not a valid number."""
    if not isinstance(text, str) or not text.strip():
        raise BadInput(gettext("Please enter a phone number."))
    if len(text) > MAX_INPUT:
        raise BadInput(gettext("That phone number is too long."))
    return _parse(ascii_digits(text), default_region)


def ascii_digits(text: str) -> str:
    """Every Unicode decimal digit (fullwidth, Arabic-Indic, Devanagari...) as its ASCII
    digit, so a number or PIN typed on another keyboard reads as what it says; NFKC alone
    leaves Arabic-Indic digits as they are. Anything else is kept, for the caller to judge."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        value = unicodedata.decimal(ch, None)
        out.append(ch if value is None else str(value))
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def _parse(text: str, default_region: str | None) -> str:
    """:func:`parse` past its cheap checks; only valid numbers are cached (errors raise)."""
    try:
        number = phonenumbers.parse(text, default_region)
    except NumberParseException as e:
        if e.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            raise BadInput(
                gettext(
                    "Please enter the number with its country code, starting with +"
                    " (for example +1 201 555 0123)."
                )
            ) from None
        raise BadInput(gettext("That does not look like a phone number.")) from None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not phonenumbers.is_valid_number(number) or len(e164) > 16:  # E.164: 15 digits at most
        raise BadInput(gettext("That phone number is not valid. Please check it and try again."))
    return e164


def split(e164: str) -> tuple[str, str]:
    """(calling code digits, national number digits) of an E.164 number, for vendor APIs
    that take the two apart."""
    number = phonenumbers.parse(e164, None)
    return str(number.country_code), phonenumbers.national_significant_number(number)


NON_GEOGRAPHIC_CODES = frozenset(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS)


def check_non_geographic(key: str, codes: Iterable[str]) -> frozenset[int]:
    """The calling codes named in ``key``, checked once in ``init_app`` so a code that is
    not a non-geographic one fails at start instead of being silently ignored."""
    out = set()
    for code in codes:
        digits = str(code).strip().lstrip("+")
        if not digits.isdigit() or int(digits) not in NON_GEOGRAPHIC_CODES:
            known = ", ".join(str(c) for c in sorted(NON_GEOGRAPHIC_CODES))
            raise ConfigError(key, f"has {code!r}", f"use non-geographic calling codes: {known}")
        out.add(int(digits))
    return frozenset(out)


@functools.lru_cache(maxsize=4096)
def _facts(e164: str) -> tuple[int | None, str | None, int]:
    """A stored number's calling code, region and type, worked out once per process
    (every start asks for them several times)."""
    number = _number(e164)
    return (
        number.country_code,
        phonenumbers.region_code_for_number(number),
        phonenumbers.number_type(number),
    )


def country_of(e164: str) -> str:
    """The key a number's calls are counted under per country: its region ('US'), or its
    non-geographic calling code ('+881')."""
    code, region, _ = _facts(e164)
    return f"+{code}" if region in (None, "001", "ZZ") else str(region)


def check_policy(
    e164: str,
    allowed_regions: frozenset[str],
    refused_types: frozenset[int],
    allowed_non_geographic: frozenset[int] = frozenset(),
) -> None:
    """Refuse numbers we must not call (toll fraud), before any provider sees them."""
    code, region, kind = _facts(e164)
    if code in NON_GEOGRAPHIC_CODES and code not in allowed_non_geographic:
        raise BadInput(
            gettext("Calls to satellite and international network numbers are not available.")
        )
    if allowed_regions and region not in allowed_regions:
        raise BadInput(gettext("Calls to numbers in this country are not available."))
    if kind in refused_types:
        raise BadInput(
            gettext("This kind of number (premium rate, shared cost, pager...) cannot be called.")
        )


def check_calling_code(e164: str, codes: frozenset[int] | None) -> None:
    """Refuse numbers outside the calling codes a provider can reach (None: any), so the user
    is told where calls can go instead of waiting for a call that cannot come."""
    if codes is None:
        return
    if _number(e164).country_code not in codes:
        where = gettext(" or ").join(f"+{c}" for c in sorted(codes))
        raise BadInput(
            gettext("Calls can only be placed to numbers starting with %(codes)s.", codes=where)
        )


def mask(e164: str | None) -> str:
    """+12015550100 -> +1******0100: enough to recognise, not enough to dial."""
    if not e164:
        return ""
    return _mask(e164)


@functools.lru_cache(maxsize=4096)
def _mask(e164: str) -> str:
    try:
        cc = str(_number(e164).country_code)
    except NumberParseException:
        cc = ""
    digits = e164.lstrip("+")
    tail = digits[-4:] if len(digits) > 6 else digits[-2:]
    hidden = max(len(digits) - len(cc) - len(tail), 0)
    return "+" + cc + "*" * hidden + tail


def supported_regions() -> frozenset[str]:
    """Regions phonenumbers knows, so callers can check a region setting without importing
    phonenumbers themselves."""
    return frozenset(phonenumbers.SUPPORTED_REGIONS)
