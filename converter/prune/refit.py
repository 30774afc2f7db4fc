"""Least-squares reconstruction of a consumer layer after some of its input channels are removed.

The layer's output on the calibration data, Y = X W + b, is what the rest of the network was trained to expect.
With only the kept inputs X_K left, the weights that keep Y closest are the ridge solution of
    (X_K' X_K + lambda I) W' = X_K' X W         (X_K with a constant column for the bias)
which needs nothing but the Gram matrix X'X the statistics pass gathered: removed channels that correlate with
kept ones are folded into them, and their average contribution into the bias. No gradient, no training loop.

The ridge term pulls the solution toward the layer's own weights for the kept inputs (not toward zero): where
the calibration data does not pin a direction down (a wide Gemm after Flatten sees one row per sample, fewer
rows than features) the trained weights stay as they were instead of being discarded.
"""

from __future__ import annotations

import numpy as np

from converter.prune.layers import LinearMap, feature_index
from converter.prune.statistics import InputMoments

#: Ridge strength relative to the mean second moment of the kept features.
RIDGE = 1e-3


def refit(moments: InputMoments, original: LinearMap, kept_positions: np.ndarray, *, ridge: float = RIDGE) -> LinearMap:
    """Coefficients over the kept input positions (and a new bias) that best reproduce the original outputs."""
    features = moments.features
    kept = feature_index(kept_positions, original.taps)
    intercept = original.bias is not None
    rows = np.concatenate([kept, [features]]) if intercept else kept
    everything = np.arange(features + 1) if intercept else np.arange(features)
    target = np.vstack([original.coefficients, original.bias[None]]) if intercept else original.coefficients
    gram = moments.gram
    lhs = gram[np.ix_(rows, rows)].copy()
    rhs = gram[np.ix_(rows, everything)] @ target
    diagonal = np.arange(len(kept))
    strength = ridge * max(float(np.mean(lhs[diagonal, diagonal])), 1e-12)
    lhs[diagonal, diagonal] += strength
    rhs[: len(kept)] += strength * original.coefficients[kept]
    solution = np.linalg.solve(lhs, rhs)
    if intercept:
        return LinearMap(solution[:-1], solution[-1], original.taps)
    return LinearMap(solution, None, original.taps)
