"""Safe redirects: ``next`` may only name a path on this site.

Refused, so the default page is used instead: absolute URLs, scheme-relative
``//host``, backslashes (browsers read ``/\\host`` as ``//host``), control and
header-injection characters, and any of these hidden behind percent-encoding.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

__all__ = ["safe_next"]

MAX_LENGTH = 2048


def safe_next(target: object) -> str | None:
    """``target`` when it is a same-site path, else None, so a crafted ``next`` cannot send a
    freshly verified user to another site."""
    if not isinstance(target, str) or not target or len(target) > MAX_LENGTH:
        return None
    decoded = target
    for _ in range(4):  # look through nested percent-encoding too
        if not _plain_path(decoded):
            return None
        step = unquote(decoded)
        if step == decoded:
            break
        decoded = step
    else:
        return None
    return target


def _plain_path(value: str) -> bool:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    if "\\" in value:
        return False
    if not value.startswith("/") or value.startswith("//"):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc
