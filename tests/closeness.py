"""Float comparisons relative to the values' scale, so that tests hold on every x86-64 CPU.

CPUs with AVX2 only, AVX-512 with bf16 and AMX run other kernels (other summation orders) for the same
float32 operation, so results agree to a few units of float32 rounding of the values' *scale*, never to
the last digit of each value: an absolute bound that fits probabilities (scale 1) is 100x too tight for
a reconstruction on the 0..100 scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def as_array(values: Any) -> np.ndarray:
    """``values`` (a numpy array, a torch tensor or a number) as a float64 numpy array."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch here
        values = values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def scaled_error(actual: Any, expected: Any) -> float:
    """The largest difference over the largest magnitude of ``expected`` (its scale; 1 for an all-zero one)."""
    actual, expected = as_array(actual), as_array(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = float(np.abs(expected).max(initial=0.0)) or 1.0
    return float(np.abs(actual - expected).max(initial=0.0)) / scale


def assert_close(actual: Any, expected: Any, rel: float, what: str = "") -> None:
    """Assert that ``actual`` differs from ``expected`` by at most ``rel`` times ``expected``'s scale."""
    error = scaled_error(actual, expected)
    assert error <= rel, f"{what}: differs by {error:.3g} of the values' scale (allowed {rel:g})"
