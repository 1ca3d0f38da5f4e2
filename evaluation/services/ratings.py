"""Bradley-Terry ratings of pairwise votes, on the Elo scale, with bootstrap intervals.

The model: ``P(i beats j) = 1 / (1 + exp(-(b_i - b_j)))``. The strengths ``b`` are the
maximum-likelihood fit (a logistic regression without intercept on the pairwise
outcomes, as the LMSYS arena fits it) found by ``scipy.optimize.minimize`` (Newton
steps in a trust region, with the exact gradient and Hessian). A tie — and a "both are
bad" vote — counts as half a win each way.
A tiny ridge term (:data:`RIDGE`) keeps the fit finite for a model that never won or
never lost; with a few votes it moves ratings by well under one point.

Ratings are ``1000 + 400 / ln 10 · (b_i − mean b)``: a 400-point gap means 10:1 odds,
and the mean rating is 1000. :func:`bootstrap_intervals` resamples the battles with
replacement (a seeded generator: the same battles and seed give the same intervals)
and takes the 2.5th and 97.5th percentiles of each model's refitted rating.

Pure numpy and scipy: no Django, so the page and API code and the tests share it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

SCALE = 400 / math.log(10)
ANCHOR = 1000.0
RIDGE = 1e-4
ROUNDS = 200

# A battle: (model shown as A, model shown as B, winner "a" | "b" | "tie" | "both_bad").
Battle = tuple[str, str, str]
_SCORE_A = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


class _Indexed:
    """Battles as arrays: each battle's two model indices and A's score (1, 0 or ½)."""

    def __init__(self, battles: Iterable[Battle]) -> None:
        rows = [(a, b, _SCORE_A[w]) for a, b, w in battles if a != b and w in _SCORE_A]
        self.models = sorted({name for a, b, _ in rows for name in (a, b)})
        index = {name: i for i, name in enumerate(self.models)}
        self.a = np.array([index[a] for a, _, _ in rows], dtype=np.intp)
        self.b = np.array([index[b] for _, b, _ in rows], dtype=np.intp)
        self.score = np.array([s for _, _, s in rows], dtype=float)

    def wins(self, weights: np.ndarray | None = None) -> np.ndarray:
        """``W[i, j]``: how many (weighted) wins ``i`` has over ``j``, ties split."""
        n = len(self.models)
        w = np.ones_like(self.score) if weights is None else weights
        flat = np.bincount(self.a * n + self.b, w * self.score, minlength=n * n)
        flat += np.bincount(self.b * n + self.a, w * (1 - self.score), minlength=n * n)
        return flat.reshape(n, n)


def _fit(wins: np.ndarray) -> np.ndarray:
    """Maximum-likelihood strengths from the win matrix, centred at 0."""
    # Imported here: scipy.optimize costs every process that loads the pages a second.
    from scipy.optimize import minimize
    from scipy.special import expit, log_expit

    n = wins.shape[0]
    i, j = np.nonzero(wins)
    counts = wins[i, j]

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = beta[i] - beta[j]
        value = -np.sum(counts * log_expit(margin)) + 0.5 * RIDGE * beta @ beta
        slope = counts * expit(-margin)  # d(-log σ(m))/dm = -σ(-m)
        grad = RIDGE * beta - np.bincount(i, slope, minlength=n)
        grad += np.bincount(j, slope, minlength=n)
        return float(value), grad

    def hessian(beta: np.ndarray) -> np.ndarray:
        margin = beta[i] - beta[j]
        weight = counts * expit(margin) * expit(-margin)
        matrix = np.zeros((n, n))
        np.add.at(matrix, (i, j), -weight)
        np.add.at(matrix, (j, i), -weight)
        matrix[np.diag_indices(n)] = -matrix.sum(axis=1) + RIDGE
        return matrix

    # Exact Newton steps in a trust region: a few iterations for the handful of
    # parameters an arena has (L-BFGS takes ten times longer here).
    result = minimize(loss, np.zeros(n), jac=True, hess=hessian, method="trust-exact")
    beta: np.ndarray = result.x
    return beta - beta.mean()


def _elo(beta: np.ndarray) -> np.ndarray:
    return ANCHOR + SCALE * beta


def bradley_terry(battles: Iterable[Battle]) -> dict[str, float]:
    """Each model's Bradley-Terry rating on the Elo scale (mean 1000); ``{}`` for none.

    Battles of a model against itself and unknown winners are ignored."""
    data = _Indexed(battles)
    if not data.models:
        return {}
    ratings = _elo(_fit(data.wins()))
    return {name: float(r) for name, r in zip(data.models, ratings, strict=True)}


def bootstrap_intervals(
    battles: Sequence[Battle], rounds: int = ROUNDS, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Each model's 95 % interval ``(lo, hi)``: percentiles of its rating refitted on
    ``rounds`` resamples (with replacement) of the battles; deterministic for a seed."""
    data = _Indexed(battles)
    if not data.models:
        return {}
    rng = np.random.default_rng(seed)
    size = len(data.score)
    samples = np.empty((rounds, len(data.models)))
    for k in range(rounds):
        weights = np.bincount(rng.integers(0, size, size), minlength=size).astype(float)
        samples[k] = _elo(_fit(data.wins(weights)))
    lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
    return {
        name: (float(low), float(high)) for name, low, high in zip(data.models, lo, hi, strict=True)
    }
