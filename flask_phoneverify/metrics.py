"""Prometheus metrics (``PHONEVERIFY_METRICS = True``, extra ``flask-phoneverify[metrics]``).

The metric objects live on prometheus_client's default registry, created once per process
on first use (a registry refuses a second metric of one name, and several apps in one
process must add to the same series). The app serves ``/metrics`` itself (see
docs/operations.md); with gunicorn's several workers, prometheus_client's multiprocess
mode (``PROMETHEUS_MULTIPROC_DIR``) aggregates them.

Series and their label values:

- ``phoneverify_calls_total{provider, style, outcome}``: outcome ``placed`` (the provider
  accepted the call), ``not_placed`` (it refused or could not be reached), ``failed`` (a
  placed call it reported failed), ``voicemail`` (a placed call a machine answered).
- ``phoneverify_verifications_total{outcome}``: ``verified`` (taken into a session), or
  how it ended unverified: ``locked``, ``expired``, ``call_failed``, ``voicemail``,
  ``canceled``.
- ``phoneverify_provider_request_seconds{provider, operation}``: ``place_call``,
  ``call_status``, ``check_code``, ``bridge``.
- ``phoneverify_limit_refusals_total{limit}``: :data:`LIMITS`.
"""

from __future__ import annotations

import threading
from typing import Any

from .errors import ConfigError

__all__ = ["Metrics", "metrics", "LIMITS", "CALL_OUTCOMES", "VERIFICATION_OUTCOMES"]

CALL_OUTCOMES = ("placed", "not_placed", "failed", "voicemail")
VERIFICATION_OUTCOMES = ("verified", "locked", "expired", "call_failed", "voicemail", "canceled")
#: why a call was refused before it was placed: the hourly budgets (``number``, ``user``,
#: ``ip``, ``country``, ``app`` and the enrolment ones), the number's cool-down, the
#: user's wrong PINs, the calling policy, the app's before_call hook, the fraud guard
LIMITS = (
    "number",
    "user",
    "ip",
    "country",
    "app",
    "enrol_number",
    "enrol_user",
    "cooldown",
    "failures",
    "policy",
    "before_call",
    "country_paused",
)
#: histogram buckets (seconds) for provider requests: vendors answer in 0.1-10 s
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_lock = threading.Lock()
_made: Metrics | None = None


class Metrics:
    """The five series, made once per process (see :func:`metrics`)."""

    def __init__(self, client: Any) -> None:
        self.calls = client.Counter(
            "phoneverify_calls_total",
            "Verification calls by provider, style and outcome.",
            ["provider", "style", "outcome"],
        )
        self.verifications = client.Counter(
            "phoneverify_verifications_total",
            "Verifications by how they ended.",
            ["outcome"],
        )
        self.requests = client.Histogram(
            "phoneverify_provider_request_seconds",
            "Time of requests to the voice provider.",
            ["provider", "operation"],
            buckets=BUCKETS,
        )
        self.refusals = client.Counter(
            "phoneverify_limit_refusals_total",
            "Calls refused before they were placed, by the limit or rule that refused them.",
            ["limit"],
        )
        self.rechecks = client.Counter(
            "phoneverify_limit_rechecks_total",
            "Starts whose one statement could not prove a limit met and ran again as a "
            "transaction (PostgreSQL), by that limit.",
            ["limit"],
        )

    def call(self, provider: str, style: str, outcome: str) -> None:
        """One call attempt's outcome, per provider and style."""
        self.calls.labels(provider=provider, style=style, outcome=outcome).inc()

    def verification(self, outcome: str) -> None:
        """One verification's end."""
        self.verifications.labels(outcome=outcome).inc()

    def request(self, provider: str, operation: str, seconds: float) -> None:
        """One request to a provider, timed."""
        self.requests.labels(provider=provider, operation=operation).observe(seconds)

    def refusal(self, limit: str) -> None:
        """One start refused by a limit."""
        self.refusals.labels(limit=limit).inc()

    def recheck(self, limit: str) -> None:
        """One start's limit read again in a transaction."""
        self.rechecks.labels(limit=limit).inc()


def metrics() -> Metrics:
    """The process's metrics, made on first use; ConfigError when prometheus_client is
    not installed (init_app calls this, so a missing extra fails at start)."""
    global _made
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "PHONEVERIFY_METRICS",
            "is on, but prometheus_client is not installed",
            "pip install 'flask-phoneverify[metrics]', or set it to False",
        ) from None
    with _lock:
        if _made is None:
            _made = Metrics(prometheus_client)
        return _made
