"""Input moments: the Gram matrices that scores and refits are computed from must be accurate in float64 terms."""

from __future__ import annotations

import numpy as np

from converter.data import Dataset
from converter.prune.pruner import ChannelPruner
from tests.converter.prune.graphs import Builder


def test_variances_of_features_with_a_large_mean_are_accurate():
    """Features around 20 with a spread of 0.05: raw float32 products lose the variance; shifted ones keep it."""
    b = Builder(shape=(4,))
    weight = b.constant("fc1.weight", (np.eye(4) * 0.05).astype(np.float32))
    bias = b.constant("fc1.bias", np.full(4, 20.0, np.float32))
    hidden = b.op("Gemm", [b.input, weight, bias], "fc1")
    model = b.model(b.gemm(b.op("Relu", [hidden], "relu"), "fc2", 4, 3))
    x = np.random.default_rng(0).normal(size=(4096, 4)).astype(np.float32)
    pruner = ChannelPruner(model, channel_multiple=1)
    moments = pruner.moments(Dataset({"x": x}, None, "calibration"))["fc2"]
    expected = np.var((x.astype(np.float64) * 0.05 + 20.0), axis=0)
    np.testing.assert_allclose(moments.variances(), expected, rtol=1e-3)
    assert moments.rows == len(x)
    np.testing.assert_allclose(
        moments.gram[-1, :-1] / moments.rows, np.mean(x.astype(np.float64) * 0.05 + 20.0, axis=0), rtol=1e-5
    )
