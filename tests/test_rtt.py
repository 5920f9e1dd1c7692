"""Expected response times (RFC 6298's estimator) that decide when a peer is overdue."""

from __future__ import annotations

import pytest

from fstore.net.rtt import CEILING, FLOOR, INITIAL, TRANSFER_RATE, ResponseTimes


def test_before_any_answer_the_expected_time_is_generous() -> None:
    assert ResponseTimes().expected() == INITIAL


def test_fast_answers_are_expected_no_sooner_than_the_floor() -> None:
    times = ResponseTimes()
    for _ in range(20):
        times.sample(0.0003)
    assert times.expected() == FLOOR


def test_a_body_adds_its_transfer_time() -> None:
    times = ResponseTimes()
    times.sample(0.001)
    assert times.expected(4_000_000) == pytest.approx(FLOOR + 4_000_000 / TRANSFER_RATE)


def test_slow_and_varying_answers_raise_the_expected_time_up_to_the_ceiling() -> None:
    times = ResponseTimes()
    for seconds in (0.1, 0.5, 0.1, 0.6, 0.1, 0.7):
        times.sample(seconds)
    assert times.srtt is not None
    assert times.expected() == pytest.approx(times.srtt + 4 * times.rttvar)
    assert FLOOR < times.expected() < CEILING
    for _ in range(50):
        times.sample(30.0)
    assert times.expected() == CEILING
