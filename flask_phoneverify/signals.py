"""Signals, sent with the app as sender (Flask's blinker namespace).

- ``verification_started(app, verification)``: a call was placed.
- ``phone_verified(app, user, phone)``: a verification succeeded and was taken into a session.
- ``phone_enrolled(app, user, phone)``: a number typed on the verify page was verified;
  the app may now store it (see also ``@phoneverify.phone_saver``).
- ``verification_failed(app, verification)``: a call failed, or a verification locked.
- ``recovery_code_used(app, user, codes_left)``: a recovery code opened the gate.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

verification_started = _signals.signal("verification-started")
phone_verified = _signals.signal("phone-verified")
phone_enrolled = _signals.signal("phone-enrolled")
verification_failed = _signals.signal("verification-failed")
recovery_code_used = _signals.signal("recovery-code-used")  # (app, user, codes_left)
