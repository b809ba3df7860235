"""flask-phoneverify: phone-call confirmation as a second factor for Flask apps.

from flask_phoneverify import PhoneVerify, phone_verified_required

phoneverify = PhoneVerify(app)

@app.get("/billing")
@login_required
@phone_verified_required
def billing(): ...
"""

from __future__ import annotations

from .errors import (
    CallRefused,
    ConfigError,
    CountryPaused,
    FlowError,
    PhoneVerifyError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderRejected,
    ProviderUnavailable,
)
from .extension import PhoneVerify
from .gate import (
    forget_phone_verification,
    forget_remembered_devices,
    is_phone_verified,
    phone_verified_required,
)
from .guard import CallAttempt
from .recovery import recovery_codes_left
from .signals import (
    VerificationInfo,
    call_failed,
    call_placed,
    country_paused,
    phone_enrolled,
    phone_verified,
    recovery_code_used,
    verification_failed,
    verification_started,
)

__version__ = "0.1.0"

__all__ = [
    "PhoneVerify",
    "phone_verified_required",
    "is_phone_verified",
    "forget_phone_verification",
    "forget_remembered_devices",
    "recovery_codes_left",
    "PhoneVerifyError",
    "ConfigError",
    "FlowError",
    "ProviderError",
    "ProviderUnavailable",
    "ProviderRejected",
    "ProviderConfigError",
    "ProviderProtocolError",
    "CallRefused",
    "CountryPaused",
    "CallAttempt",
    "VerificationInfo",
    "verification_started",
    "call_placed",
    "call_failed",
    "phone_verified",
    "phone_enrolled",
    "verification_failed",
    "country_paused",
    "recovery_code_used",
]
