"""A consumer layer as one linear map, `rows @ coefficients + bias`, whatever its ONNX form.

Conv weights (O, C, kh, kw), Gemm's alpha/beta/transB and MatMul's (K, N) matrix all become a (features, outputs)
coefficient matrix over the rows that statistics.py samples, so that scoring and the refit treat them alike;
`to_onnx` writes a refitted map back in the node's own layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from converter.prune.graph import Consumer


@dataclass
class LinearMap:
    coefficients: np.ndarray  # (features, outputs)
    bias: np.ndarray | None  # (outputs,), None for MatMul (no bias input to fold into)
    taps: int  # features per input channel position (kh * kw for a convolution, 1 otherwise)


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def bias_input(node: onnx.NodeProto) -> str | None:
    return node.input[2] if len(node.input) > 2 and node.input[2] else None


def linear_map(consumer: Consumer, node: onnx.NodeProto, arrays: dict[str, np.ndarray]) -> LinearMap:
    weight = arrays[consumer.weight].astype(np.float64)
    bias_name = bias_input(node)
    if consumer.op == "Conv":
        outputs = weight.shape[0]
        bias = arrays[bias_name].astype(np.float64) if bias_name else np.zeros(outputs)
        return LinearMap(weight.reshape(outputs, -1).T, bias, int(np.prod(weight.shape[2:])))
    if consumer.op == "Gemm":
        attrs = _attrs(node)
        matrix = weight.T if attrs.get("transB", 0) else weight
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        outputs = matrix.shape[1]
        bias = np.zeros(outputs)
        if bias_name:
            bias = np.broadcast_to(beta * arrays[bias_name].astype(np.float64).reshape(-1), (outputs,)).copy()
        return LinearMap(alpha * matrix, bias, 1)
    return LinearMap(weight, None, 1)


def feature_index(positions: np.ndarray, taps: int) -> np.ndarray:
    """Rows of the coefficient matrix that belong to the given input channel positions."""
    return (positions[:, None] * taps + np.arange(taps)).ravel()


def to_onnx(
    consumer: Consumer, node: onnx.NodeProto, arrays: dict[str, np.ndarray], refitted: LinearMap
) -> dict[str, np.ndarray]:
    """The node's new initializers (by name; a missing bias gets `<node>.refit_bias`) and attribute fixes.

    The caller adds a new bias input to the node when the returned dict names one it does not have.
    """
    weight = arrays[consumer.weight]
    dtype = weight.dtype
    coefficients = refitted.coefficients
    bias_name = bias_input(node)
    if consumer.op == "Conv":
        outputs = weight.shape[0]
        new = {consumer.weight: coefficients.T.reshape(outputs, -1, *weight.shape[2:]).astype(dtype)}
        new[bias_name or f"{node.name}.refit_bias"] = refitted.bias.astype(dtype)  # type: ignore[union-attr]
        return new
    if consumer.op == "Gemm":
        attrs = _attrs(node)
        alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
        matrix = coefficients / alpha
        new = {consumer.weight: (matrix.T if attrs.get("transB", 0) else matrix).astype(dtype)}
        bias = refitted.bias
        if bias_name and beta != 0:
            new[bias_name] = (bias / beta).reshape(arrays[bias_name].shape if arrays[bias_name].size > 1 else (-1,))
            new[bias_name] = new[bias_name].astype(dtype)
        else:
            for attribute in node.attribute:
                if attribute.name == "beta":
                    attribute.f = 1.0
            shape = arrays[bias_name].shape if bias_name and arrays[bias_name].size == len(bias) else (-1,)  # type: ignore[arg-type]
            new[bias_name or f"{node.name}.refit_bias"] = bias.reshape(shape).astype(dtype)  # type: ignore[union-attr]
        return new
    return {consumer.weight: coefficients.astype(dtype)}
