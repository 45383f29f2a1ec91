"""The outbox retry policy: exponential, capped, jittered, and never giving up before overnight."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lisgw.errors import ConfigError
from lisgw.services.backoff import BackoffPolicy, next_attempt_at, retry_horizon

OVERNIGHT = 14 * 3600.0  # 18:00 to 08:00: the outage the issue sizes the retries for

rands = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
policies = st.builds(
    BackoffPolicy,
    base=st.floats(min_value=0.01, max_value=60.0),
    factor=st.floats(min_value=1.1, max_value=10.0),
    cap=st.floats(min_value=60.0, max_value=3600.0),
    jitter=st.floats(min_value=0.0, max_value=0.5),
    give_up_after=st.floats(min_value=0.0, max_value=3 * 24 * 3600.0),
)


def test_defaults_are_the_issue_policy() -> None:
    policy = BackoffPolicy()
    nominal = [policy.nominal_delay(n) for n in range(1, 12)]
    assert nominal == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert (policy.base, policy.factor, policy.cap, policy.jitter) == (1.0, 2.0, 300.0, 0.2)
    assert policy.give_up_after == 72 * 3600.0


def test_default_horizon_covers_a_weekend_whatever_the_jitter() -> None:
    policy = BackoffPolicy()
    assert retry_horizon(policy) >= 72 * 3600.0 >= OVERNIGHT
    # One attempt fewer would not cover it: the horizon is tight, not just large.
    shortest = 1 - policy.jitter
    short = sum(policy.nominal_delay(n) * shortest for n in range(1, policy.max_attempts - 1))
    assert short < policy.give_up_after


def test_jitter_bounds_at_the_extremes() -> None:
    policy = BackoffPolicy()
    assert policy.delay(3, 0.0) == pytest.approx(4 * 0.8)
    assert policy.delay(3, 0.5) == pytest.approx(4.0)
    assert policy.delay(20, 0.999999) == pytest.approx(300 * 1.2, rel=1e-5)


def test_next_attempt_is_none_exactly_at_exhaustion() -> None:
    policy = BackoffPolicy(give_up_after=60.0, jitter=0.0)
    # Delays 1+2+4+8+16+32 = 63 >= 60: six delays, seven attempts.
    assert policy.max_attempts == 7
    assert next_attempt_at(policy, failures=6, now=100.0, rand=0.5) == 132.0
    assert next_attempt_at(policy, failures=7, now=100.0, rand=0.5) is None


def test_zero_horizon_gives_up_at_the_first_failure() -> None:
    policy = BackoffPolicy(give_up_after=0.0)
    assert policy.max_attempts == 1
    assert next_attempt_at(policy, failures=1, now=0.0, rand=0.1) is None


def test_constant_delays_when_factor_is_one() -> None:
    policy = BackoffPolicy(base=10.0, factor=1.0, cap=300.0, jitter=0.0, give_up_after=95.0)
    assert [policy.nominal_delay(n) for n in (1, 2, 50)] == [10.0, 10.0, 10.0]
    assert policy.max_attempts == 11  # ten delays of 10 s cover 95 s
    assert retry_horizon(policy) == 100.0


def test_unreachable_horizon_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="attempts"):
        BackoffPolicy(base=0.001, factor=1.0, cap=1.0, give_up_after=365 * 86400.0)


def test_invalid_policies_report_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        BackoffPolicy(base=0.0, factor=0.5, cap=-1.0, jitter=1.0, give_up_after=-5.0)
    keys = [problem.split(":")[0] for problem in caught.value.problems]
    assert keys == [
        "backoff.base",
        "backoff.factor",
        "backoff.cap",
        "backoff.jitter",
        "backoff.give_up_after",
    ]


def test_bad_arguments_are_rejected() -> None:
    policy = BackoffPolicy()
    with pytest.raises(ValueError, match="failures"):
        policy.nominal_delay(0)
    with pytest.raises(ValueError, match="rand"):
        policy.delay(1, 1.0)


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(min_value=1, max_value=5000))
def test_nominal_delay_is_monotone_up_to_the_cap(policy: BackoffPolicy, failures: int) -> None:
    here, after = policy.nominal_delay(failures), policy.nominal_delay(failures + 1)
    assert policy.base <= here <= after <= policy.cap
    if here < policy.cap and policy.factor > 1:
        assert after == pytest.approx(min(policy.cap, here * policy.factor))


@settings(max_examples=200, deadline=None)
@given(policies, st.integers(min_value=1, max_value=5000), rands)
def test_jittered_delay_stays_within_bounds(
    policy: BackoffPolicy, failures: int, rand: float
) -> None:
    nominal = policy.nominal_delay(failures)
    delay = policy.delay(failures, rand)
    assert nominal * (1 - policy.jitter) <= delay * (1 + 1e-12)
    assert delay <= nominal * (1 + policy.jitter) * (1 + 1e-12)
    assert delay > 0


@settings(max_examples=100, deadline=None)
@given(policies, st.randoms(use_true_random=False))
def test_any_draws_retry_for_at_least_the_horizon(policy: BackoffPolicy, rng: object) -> None:
    """Simulate a row failing until given up: the time it spent retrying covers the horizon."""
    assert hasattr(rng, "random")
    now, failures = 0.0, 0
    while True:
        failures += 1
        later = next_attempt_at(policy, failures=failures, now=now, rand=rng.random())
        if later is None:
            break
        assert later > now
        now = later
    assert failures == policy.max_attempts
    assert now >= policy.give_up_after * (1 - 1e-9)
    assert retry_horizon(policy) <= now * (1 + 1e-9)
