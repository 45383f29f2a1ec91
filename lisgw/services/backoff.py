"""Retry policy of the outbox: exponential backoff with jitter, sized for an overnight outage.

Layer: domain (pure). No clock and no randomness of its own: the caller passes ``now`` and a
uniform draw ``rand`` in [0, 1), so every decision can be tested exactly.

The rule (issue 5, "HIS bridge"): after the n-th consecutive failed delivery of an outbox row
the next attempt waits ``base * factor ** (n - 1)`` seconds, capped at ``cap`` (the *nominal*
delay), spread by ``±jitter`` (1 s, 2 s, 4 s … 5 min ± 20 % by default). Jitter keeps the rows
of a whole night's backlog from hitting a HIS that comes back all in the same second; it is
applied after the cap, so retries at the cap still spread.

A row is given up (dead letter, with the reason) once retrying has lasted ``give_up_after``
seconds (72 h by default: a weekend outage, well beyond a night). The policy counts attempts,
not clock time, so that requeueing a row restarts its horizon: ``max_attempts`` is the smallest
number of attempts whose delays, each at its *shortest* jitter, add up to ``give_up_after``.
However the draws fall, a row is retried for at least that long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from lisgw.errors import ConfigError

__all__ = ["BackoffPolicy", "next_attempt_at", "retry_horizon"]

_MAX_ATTEMPTS_LIMIT = 10_000_000  # a policy needing more attempts than this is a config error


@dataclass(frozen=True)
class BackoffPolicy:
    """Exponential backoff with jitter and a retry horizon (module docstring)."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.2
    give_up_after: float = 72 * 3600.0

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.base) and self.base > 0):
            problems.append(f"backoff.base: must be a positive number of seconds, not {self.base}")
        if not (math.isfinite(self.factor) and self.factor >= 1):
            problems.append(f"backoff.factor: must be at least 1, not {self.factor}")
        if not (math.isfinite(self.cap) and self.cap >= self.base):
            problems.append(f"backoff.cap: must be at least backoff.base, not {self.cap}")
        if not (0 <= self.jitter < 1):
            problems.append(f"backoff.jitter: must be in [0, 1), not {self.jitter}")
        if not (math.isfinite(self.give_up_after) and self.give_up_after >= 0):
            problems.append(
                f"backoff.give_up_after: must be >= 0 seconds, not {self.give_up_after}"
            )
        if problems:
            raise ConfigError(problems)
        _ = self.max_attempts  # an unreachable horizon is a config error, reported now

    def nominal_delay(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures (>= 1), before jitter."""
        if failures < 1:
            raise ValueError("failures counts from 1")
        if failures >= self._plateau[0]:
            return self._plateau[1]
        return min(self.cap, self.base * self.factor ** (failures - 1))

    def delay(self, failures: int, rand: float) -> float:
        """The jittered delay: ``nominal * (1 + jitter * (2 * rand - 1))``, rand in [0, 1)."""
        if not 0 <= rand < 1:
            raise ValueError("rand must be a uniform draw in [0, 1)")
        return self.nominal_delay(failures) * (1 + self.jitter * (2 * rand - 1))

    @cached_property
    def _plateau(self) -> tuple[int, float]:
        """From which failure on the delay stops growing, and its value there.

        Computed once so that large failure counts never overflow ``factor ** n``.
        """
        if self.factor == 1:
            return 1, self.base
        return 1 + max(0, math.ceil(math.log(self.cap / self.base, self.factor))), self.cap

    @cached_property
    def max_attempts(self) -> int:
        """Attempts before a row is given up: the shortest delays between them cover the
        horizon (module docstring). At least 1."""
        shortest = 1 - self.jitter
        total, failures = 0.0, 0
        while total < self.give_up_after:
            failures += 1
            plateau_from, plateau = self._plateau
            if failures >= plateau_from:
                # Only equal delays are left: count them at once.
                rest = math.ceil((self.give_up_after - total) / (plateau * shortest))
                failures += rest - 1
                break
            total += self.nominal_delay(failures) * shortest
        if failures + 1 > _MAX_ATTEMPTS_LIMIT:
            raise ConfigError(["backoff: give_up_after needs more attempts than is reasonable"])
        return failures + 1


def next_attempt_at(
    policy: BackoffPolicy, *, failures: int, now: float, rand: float
) -> float | None:
    """When to try again after ``failures`` consecutive failures, or None to give up."""
    if failures >= policy.max_attempts:
        return None
    return now + policy.delay(failures, rand)


def retry_horizon(policy: BackoffPolicy) -> float:
    """The shortest time a row can spend between its first attempt and being given up."""
    shortest = 1 - policy.jitter
    return sum(policy.nominal_delay(n) * shortest for n in range(1, policy.max_attempts))
