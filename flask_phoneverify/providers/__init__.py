"""The voice providers, by the name PHONEVERIFY_PROVIDER takes.

Modules are imported only when their provider is chosen (or listed), so an app
on one provider never loads another's client library.
"""

from __future__ import annotations

import importlib

from .base import Provider

__all__ = ["REGISTRY", "load", "Provider"]

REGISTRY: dict[str, str] = {
    "dev": "flask_phoneverify.providers.dev:DevPhone",
    "phoneconfirm": "flask_phoneverify.providers.phoneconfirm:PhoneConfirm",
    "xverify": "flask_phoneverify.providers.xverify:Xverify",
    "veratad": "flask_phoneverify.providers.veratad:Veratad",
    "anveo": "flask_phoneverify.providers.anveo:Anveo",
    "voiceshot": "flask_phoneverify.providers.voiceshot:VoiceShot",
    "twilio": "flask_phoneverify.providers.twilio:Twilio",
}


def load(name: str) -> type[Provider]:
    """The provider class registered under ``name`` (KeyError when unknown), imported only now
    so an app never loads the client libraries of providers it does not use."""
    module_name, _, class_name = REGISTRY[name].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls
