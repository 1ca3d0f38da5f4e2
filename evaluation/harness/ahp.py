"""Expert weights by the analytic hierarchy process (Saaty).

A suite's ``ahp.matrix`` holds pairwise comparisons of its tasks: ``m[i][j]`` says how
much more task ``i`` matters than task ``j`` (1–9, reciprocals below the diagonal).
The weights are the principal eigenvector, normalised to sum to 1; judgements whose
consistency ratio exceeds 0.1 are refused, as Saaty recommends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MAX_CONSISTENCY_RATIO = 0.1
RECIPROCAL_TOLERANCE = 0.02  # relative; "1/3 as 0.333" must pass
# Saaty's random consistency index by matrix order.
RANDOM_INDEX = (0.0, 0.0, 0.0, 0.58, 0.90, 1.12, 1.24, 1.32, 1.41, 1.45, 1.49,
                1.51, 1.48, 1.56, 1.57, 1.59)  # fmt: skip


@dataclass(frozen=True)
class AHPResult:
    weights: tuple[float, ...]
    lambda_max: float
    consistency_index: float
    consistency_ratio: float


def check_matrix(matrix: Sequence[Sequence[float]]) -> np.ndarray:
    """The matrix as an array; ``ValueError`` unless square, positive, 1 on the diagonal
    and reciprocal (``m[j][i] == 1 / m[i][j]`` within 2 %)."""
    m = np.asarray(matrix, dtype=float)
    n = len(m)
    if m.ndim != 2 or m.shape != (n, n) or n == 0:
        raise ValueError("must be a square matrix with one row per task")
    if n >= len(RANDOM_INDEX):
        raise ValueError(f"at most {len(RANDOM_INDEX) - 1} tasks can be compared")
    if not np.all(np.isfinite(m)) or np.any(m <= 0):
        raise ValueError("comparisons must be positive numbers")
    if not np.allclose(np.diag(m), 1.0):
        raise ValueError("the diagonal must be 1 (a task compared with itself)")
    i, j = np.nonzero(np.abs(m * m.T - 1.0) > RECIPROCAL_TOLERANCE)
    if len(i):
        raise ValueError(f"[{j[0]}][{i[0]}] must be 1/[{i[0]}][{j[0]}] = {1 / m[i[0], j[0]]:.3g}")
    return m


def ahp_weights(matrix: Sequence[Sequence[float]]) -> AHPResult:
    """Principal-eigenvector weights and the consistency ratio CI / RI, CI = (λmax − n)/(n − 1).

    Raises ``ValueError`` for a malformed matrix or a consistency ratio above 0.1.
    """
    m = check_matrix(matrix)
    n = len(m)
    values, vectors = np.linalg.eig(m)
    k = int(np.argmax(values.real))
    vector = np.abs(vectors[:, k].real)
    weights = vector / vector.sum()
    lambda_max = float(values[k].real)
    ci = max(0.0, (lambda_max - n) / (n - 1)) if n > 1 else 0.0
    cr = ci / RANDOM_INDEX[n] if RANDOM_INDEX[n] else 0.0
    if cr > MAX_CONSISTENCY_RATIO:
        raise ValueError(
            f"the comparisons are inconsistent: consistency ratio {cr:.3f} > "
            f"{MAX_CONSISTENCY_RATIO} (revise the judgements)"
        )
    return AHPResult(tuple(float(w) for w in weights), lambda_max, ci, cr)
