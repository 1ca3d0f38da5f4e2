"""Bradley-Terry ratings: recovered from votes simulated with known strengths, ties as
half wins, Elo scale anchored at 1000, and bootstrap intervals that hold the truth and
narrow with more votes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.services.ratings import Battle, bootstrap_intervals, bradley_terry

TRUE = {"ant": 850.0, "bee": 950.0, "cat": 1000.0, "dog": 1050.0, "eel": 1150.0}


def simulate(votes: int, seed: int) -> list[Battle]:
    """``votes`` battles between random distinct pairs, won with the Elo odds of TRUE."""
    rng = np.random.default_rng(seed)
    names = sorted(TRUE)
    battles: list[Battle] = []
    for _ in range(votes):
        a, b = rng.choice(names, size=2, replace=False)
        p_a = 1 / (1 + 10 ** ((TRUE[b] - TRUE[a]) / 400))
        battles.append((str(a), str(b), "a" if rng.random() < p_a else "b"))
    return battles


def test_ratings_recover_the_order_and_scale_of_known_strengths() -> None:
    ratings = bradley_terry(simulate(6000, seed=1))

    assert sorted(ratings, key=ratings.get) == sorted(TRUE, key=TRUE.get)  # type: ignore[arg-type]
    assert sum(ratings.values()) / len(ratings) == pytest.approx(1000.0)
    for name, truth in TRUE.items():
        assert ratings[name] == pytest.approx(truth, abs=25)


def test_two_models_three_wins_in_four_are_400_log10_3_apart() -> None:
    battles = [("x", "y", "a"), ("y", "x", "b"), ("x", "y", "a"), ("x", "y", "b")]

    ratings = bradley_terry(battles)

    # The MLE of a 3:1 record is odds of 3: 400·log10(3) ≈ 190.85 Elo points.
    assert ratings["x"] - ratings["y"] == pytest.approx(400 * math.log10(3), abs=1)
    assert ratings["x"] + ratings["y"] == pytest.approx(2000)


def test_a_tie_counts_as_half_a_win_each_way() -> None:
    split = [("x", "y", "a"), ("x", "y", "b"), ("x", "z", "a"), ("z", "x", "a")]
    tied = [("x", "y", "tie"), ("y", "x", "both_bad"), ("x", "z", "a"), ("z", "x", "a")]

    assert bradley_terry(tied) == pytest.approx(bradley_terry(split))
    assert bradley_terry([("x", "y", "tie")]) == pytest.approx({"x": 1000.0, "y": 1000.0})


def test_a_model_that_never_won_gets_a_finite_lowest_rating() -> None:
    ratings = bradley_terry([("x", "y", "a")] * 5 + [("y", "z", "a")] * 5 + [("x", "z", "tie")])

    assert all(math.isfinite(r) for r in ratings.values())
    assert ratings["z"] < ratings["y"] < ratings["x"]


def test_self_battles_and_unknown_winners_are_ignored_and_no_battles_give_nothing() -> None:
    assert bradley_terry([]) == {}
    assert bootstrap_intervals([]) == {}
    assert bradley_terry([("x", "x", "a"), ("x", "y", "?")]) == {}


def test_intervals_contain_the_truth_about_95_percent_of_the_time() -> None:
    inside = total = 0
    for dataset in range(10):
        intervals = bootstrap_intervals(simulate(800, seed=100 + dataset), rounds=100, seed=dataset)
        for name, truth in TRUE.items():
            lo, hi = intervals[name]
            inside += lo <= truth <= hi
            total += 1

    # 50 intervals of 95 %: fewer than 43 inside has a probability under 1 %.
    assert inside >= 43, f"{inside} of {total} intervals hold the true rating"


def test_intervals_narrow_with_more_votes() -> None:
    few = bootstrap_intervals(simulate(600, seed=2), rounds=100, seed=7)
    many = bootstrap_intervals(simulate(6000, seed=3), rounds=100, seed=7)

    for name in TRUE:
        few_width, many_width = few[name][1] - few[name][0], many[name][1] - many[name][0]
        # Ten times the votes: about √10 ≈ 3.2 times narrower.
        assert many_width < few_width / 2, (name, few_width, many_width)


def test_intervals_are_deterministic_for_a_seed() -> None:
    battles = simulate(300, seed=4)

    first = bootstrap_intervals(battles, rounds=50, seed=11)

    assert bootstrap_intervals(battles, rounds=50, seed=11) == first
    assert bootstrap_intervals(battles, rounds=50, seed=12) != first
