"""A PIN works once even under a race: real HTTP server, real database, threads."""

from __future__ import annotations

from typing import Any

from .helpers import race_right_confirms


def test_concurrent_right_confirms_exactly_one_wins(make_app: Any) -> None:
    h = make_app(PHONEVERIFY_STYLE="spoken")
    results = race_right_confirms(h.app)
    assert sorted(results) == [200] + [409] * 7, results
