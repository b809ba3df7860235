"""The voice providers: the public provider API, and the registry that finds them.

A provider is a :class:`Provider` subclass registered under the entry-point group
``flask_phoneverify.providers`` (``name = "package.module:Class"``); the built-in
ones are registered the same way, in this package's own ``pyproject.toml``, so a
third-party provider is found and treated exactly like ours. Writing one is
described in ``docs/providers/writing.md``; its tests can run the contract suite
of :mod:`flask_phoneverify.testing`.

A provider's module is imported only when the provider is chosen (or listed), so
an app on one provider never loads another's client library.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points

from ..errors import (
    ConfigError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from ..settings import CORE_SETTINGS, Setting
from .base import (
    VOICEMAIL_REASON,
    CallbackReply,
    CallbackRequest,
    CallEvent,
    CallReport,
    CallRequest,
    CallState,
    CallTicket,
    EventResult,
    Outcome,
    PlacedCall,
    Provider,
    Style,
    check_url,
    timeout_setting,
)

__all__ = [
    # the provider API
    "Provider",
    "Style",
    "CallState",
    "Outcome",
    "CallRequest",
    "CallTicket",
    "PlacedCall",
    "CallReport",
    "CallEvent",
    "CallbackRequest",
    "CallbackReply",
    "EventResult",
    "VOICEMAIL_REASON",
    "Setting",
    "timeout_setting",
    "check_url",
    # the errors a provider raises
    "ConfigError",
    "ProviderError",
    "ProviderUnavailable",
    "ProviderRejected",
    "ProviderConfigError",
    "ProviderProtocolError",
    # the registry
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "installed",
    "load",
]

#: the entry-point group providers are registered under (name -> "module:Class")
ENTRY_POINT_GROUP = "flask_phoneverify.providers"


def installed() -> dict[str, list[str]]:
    """Every provider name registered in the environment, with the distinct targets
    registered under it (more than one is a conflict :func:`load` refuses). Read
    afresh each time: it is asked at ``init_app``, never on a request."""
    found: dict[str, list[str]] = {}
    for ep in _entry_points():
        targets = found.setdefault(ep.name, [])
        if ep.value not in targets:  # one distribution seen twice on sys.path is not a clash
            targets.append(ep.value)
    return dict(sorted(found.items()))


def _entry_points() -> Iterator[EntryPoint]:
    return iter(entry_points(group=ENTRY_POINT_GROUP))


class _Installed(Mapping[str, str]):
    """The installed providers as a read-only mapping (name -> "module:Class"), read
    from the entry points on each use."""

    def __getitem__(self, name: str) -> str:
        targets = installed()[name]
        return targets[0]

    def __iter__(self) -> Iterator[str]:
        return iter(installed())

    def __len__(self) -> int:
        return len(installed())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in installed()


#: the installed providers by name (the entry points, read on each use)
REGISTRY: Mapping[str, str] = _Installed()

#: a provider's options (PHONEVERIFY_<NAME>_<OPTION>) must not be mistaken for these
_CORE_NAMES = tuple(s.name for s in CORE_SETTINGS)


def load(name: str, *, key: str = "PHONEVERIFY_PROVIDER") -> type[Provider]:
    """The provider class registered under ``name``, imported only now.

    Raises :class:`ConfigError` (naming ``key``) when no provider of that name is
    installed (the message lists those that are), when two packages register
    different classes under it, when its settings prefix would capture a core
    setting (other than those the provider names in ``core_settings``), or when
    what is registered is not a provider of that name."""
    found = installed()
    if name not in found:
        names = ", ".join(repr(n) for n in found)
        fix = (
            f"use one of the installed providers: {names}, or install the package that "
            f"provides {name!r}"
            if found
            else "no provider is installed; reinstall flask-phoneverify (for a checkout: "
            "pip install -e .) so its entry points are registered"
        )
        raise ConfigError(key, f"is {name!r}, which is not an installed provider", fix)
    targets = found[name]
    if len(targets) > 1:
        raise ConfigError(
            key,
            f"is {name!r}, which {len(targets)} packages register differently "
            f"({', '.join(targets)})",
            "uninstall all but one of them",
        )
    if not name.replace("_", "").isalnum() or not name.isascii() or not name.islower():
        raise ConfigError(
            key,
            f"is {name!r}: a provider name must be lower-case letters, digits and underscores",
            "rename the provider's entry point",
        )
    module_name, _, attr = targets[0].partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            key,
            f"is {name!r}, registered as {targets[0]}, which cannot be loaded "
            f"({type(e).__name__}: {e})",
            "install what the provider's package needs, or fix its entry point",
        ) from e
    if not (isinstance(obj, type) and issubclass(obj, Provider)):
        raise ConfigError(
            key,
            f"is {name!r}, registered as {targets[0]}, which is not a Provider subclass",
            "fix the package's entry point",
        )
    if getattr(obj, "name", None) != name:
        raise ConfigError(
            key,
            f"is {name!r}, registered as {targets[0]}, whose name is "
            f"{getattr(obj, 'name', None)!r}",
            "register the provider under its own name",
        )
    prefix = f"PHONEVERIFY_{name.upper()}_"
    clash = [s for s in _CORE_NAMES if s.startswith(prefix) and s not in obj.core_settings]
    clash += [s.name for s in obj.settings if s.name in _CORE_NAMES]
    if clash:
        raise ConfigError(
            key,
            f"is {name!r}, whose settings prefix {prefix} collides with the core setting "
            f"{clash[0]}",
            "rename the provider's entry point (and its settings)",
        )
    return obj
