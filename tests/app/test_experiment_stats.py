"""The experiment report's statistics, on numbers small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np

from app.services.experiments import Arm, ArmReport, Report, Running


def report(a: ArmReport, b: ArmReport) -> Report:
    return Report("e", True, 0, None, 3600, [a, b])


def test_users_are_split_by_weight_and_keep_their_arm() -> None:
    running = Running("e", "salt", (Arm("champion", "1", 3.0), Arm("challenger", "2", 1.0)), 3600)
    arms = [running.arm_for(user).alias for user in range(20_000)]
    share = arms.count("champion") / len(arms)
    assert 0.74 < share < 0.76
    assert [running.arm_for(user).alias for user in range(100)] == arms[:100]
    other_salt = Running("e2", "other", running.arms, 3600)
    moved = sum(other_salt.arm_for(u).alias != arms[u] for u in range(20_000))
    assert moved > 5000  # a new experiment reshuffles users


def test_the_variance_is_clustered_by_user() -> None:
    # two users, ten impressions each: one liked all, one none; the rate is 0.5 either way,
    # but ten independent coin flips per user would understate how uncertain it is
    clustered = ArmReport("a", "1", 1.0, (10, 10), (10, 0))
    assert clustered.hit_rate == 0.5
    shown, hit = np.array([10, 10]), np.array([10, 0])
    expected = ((hit - 0.5 * shown) ** 2).sum() / (2 - 1) * 2 / shown.sum() ** 2
    assert math.isclose(clustered.variance(), expected)
    binomial = 0.5 * 0.5 / 20
    assert clustered.variance() > 10 * binomial
    mixed = ArmReport("a", "1", 1.0, (10, 10), (5, 5))
    assert mixed.variance() == 0.0  # every user at the same rate


def test_the_comparison_finds_a_real_difference_and_not_a_fake_one() -> None:
    rng = np.random.default_rng(3)

    def arm(rate: float, users: int) -> ArmReport:
        shown = rng.integers(5, 15, size=users)
        return ArmReport(
            "x", "1", 1.0, tuple(int(s) for s in shown), tuple(int(h) for h in rng.binomial(shown, rate))
        )

    difference, low, high, p = report(arm(0.3, 400), arm(0.2, 400)).comparison()  # type: ignore[misc]
    assert low > 0 and p < 1e-6 and low < difference < high
    same = [report(arm(0.25, 300), arm(0.25, 300)).comparison() for _ in range(200)]
    covered = sum(low <= 0 <= high for _, low, high, _ in same)  # type: ignore[misc]
    assert 180 <= covered <= 200  # a 95% interval holds the true 0 about 190 times in 200
    assert report(arm(0.3, 1), arm(0.2, 400)).comparison() is None  # one user: no interval
