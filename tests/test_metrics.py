"""Prometheus metrics: PHONEVERIFY_METRICS, one set per process on the default registry."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY, generate_latest

from flask_phoneverify import ConfigError

from .helpers import Harness, begin, csrf, dev_call_id, post, verify_keypad


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_verification_counts_its_call_outcome_and_provider_time(
    make_app: Callable[..., Harness],
) -> None:
    h = make_app(PHONEVERIFY_METRICS=True)
    placed = value("phoneverify_calls_total", provider="dev", style="keypad", outcome="placed")
    verified = value("phoneverify_verifications_total", outcome="verified")
    timed = value(
        "phoneverify_provider_request_seconds_count", provider="dev", operation="place_call"
    )
    verify_keypad(h.client())
    assert (
        value("phoneverify_calls_total", provider="dev", style="keypad", outcome="placed")
        == placed + 1
    )
    assert value("phoneverify_verifications_total", outcome="verified") == verified + 1
    assert (
        value("phoneverify_provider_request_seconds_count", provider="dev", operation="place_call")
        == timed + 1
    )


def test_failures_and_refusals_are_counted_by_kind(make_app: Callable[..., Harness]) -> None:
    h = make_app(PHONEVERIFY_METRICS=True, PHONEVERIFY_CALLS_PER_NUMBER_PER_HOUR=1)
    failed = value("phoneverify_calls_total", provider="dev", style="keypad", outcome="failed")
    ended = value("phoneverify_verifications_total", outcome="call_failed")
    refused = value("phoneverify_limit_refusals_total", limit="number")
    c = h.client()
    token, body = begin(c)
    post(c, f"/dev/phone/{dev_call_id(h, body['token'])}/hangup", token=token)
    assert post(c, "/start", token=csrf(c)).status_code == 429
    assert (
        value("phoneverify_calls_total", provider="dev", style="keypad", outcome="failed")
        == failed + 1
    )
    assert value("phoneverify_verifications_total", outcome="call_failed") == ended + 1
    assert value("phoneverify_limit_refusals_total", limit="number") == refused + 1


def test_apps_in_one_process_share_the_series(make_app: Callable[..., Harness]) -> None:
    one, two = make_app(PHONEVERIFY_METRICS=True), make_app(PHONEVERIFY_METRICS=True)
    before = value("phoneverify_verifications_total", outcome="verified")
    verify_keypad(one.client())
    verify_keypad(two.client())
    assert value("phoneverify_verifications_total", outcome="verified") == before + 2
    exposed = generate_latest(REGISTRY).decode()
    assert exposed.count("# TYPE phoneverify_calls_total counter") == 1


def test_off_by_default_counts_nothing(make_app: Callable[..., Harness]) -> None:
    h = make_app()
    before = value("phoneverify_verifications_total", outcome="verified")
    verify_keypad(h.client())
    assert value("phoneverify_verifications_total", outcome="verified") == before


def test_metrics_without_prometheus_client_fail_init_app(
    make_app: Callable[..., Harness], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(ConfigError) as caught:
        make_app(PHONEVERIFY_METRICS=True)
    assert caught.value.key == "PHONEVERIFY_METRICS"
    assert "flask-phoneverify[metrics]" in str(caught.value)
