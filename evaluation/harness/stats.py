"""Bootstrap standard errors, deterministic for a seed (numpy ``Generator(PCG64(seed))``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Transform = Callable[[np.ndarray], np.ndarray]


def _identity(ratio: np.ndarray) -> np.ndarray:
    return ratio


def bootstrap_ratio_stderr(
    numerators: Sequence[float],
    denominators: Sequence[float],
    *,
    transform: Transform = _identity,
    iters: int = 1000,
    seed: int = 1234,
) -> float:
    """Standard error of ``transform(sum(num) / sum(den))`` over ``iters`` resamples.

    The resamples draw sample indices with replacement; the error is the sample standard
    deviation (ddof=1) of the resampled statistics, as lm-eval's ``bootstrap_stderr``.
    Fewer than two samples give 0.0; the same inputs and seed give the same number.
    """
    num = np.asarray(numerators, dtype=float)
    den = np.asarray(denominators, dtype=float)
    if len(num) < 2 or iters < 2:
        return 0.0
    rng = np.random.Generator(np.random.PCG64(seed))
    stats = np.empty(iters)
    # Chunks keep the index matrix small for large tasks.
    chunk = max(1, min(iters, 2_000_000 // len(num)))
    for start in range(0, iters, chunk):
        idx = rng.integers(0, len(num), size=(min(chunk, iters - start), len(num)))
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[start : start + len(idx)] = transform(num[idx].sum(1) / den[idx].sum(1))
    stats = stats[np.isfinite(stats)]
    return float(np.std(stats, ddof=1)) if len(stats) > 1 else 0.0


def bootstrap_stderr(values: Sequence[float], *, iters: int = 1000, seed: int = 1234) -> float:
    """Bootstrap standard error of the mean of ``values`` (deterministic for ``seed``)."""
    return bootstrap_ratio_stderr(values, [1.0] * len(values), iters=iters, seed=seed)
