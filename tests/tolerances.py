"""One tolerance per dtype, as ``jax._src.public_test_util`` keys them."""

import numpy as np

_TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2, "bfloat16": 1e-2}


def tolerance(dtype) -> float:
    """Relative/absolute tolerance for comparing results computed in ``dtype``."""
    return _TOLERANCE[np.dtype(dtype).name]


def assert_close(actual, expected, dtype=None, scale: float = 1.0) -> None:
    """``np.testing.assert_allclose`` with the tolerance of ``dtype`` (default: ``actual``'s),
    multiplied by ``scale`` for results that accumulate rounding over many steps."""
    actual = np.asarray(actual)
    tol = tolerance(dtype if dtype is not None else actual.dtype) * scale
    np.testing.assert_allclose(
        actual.astype(np.float64), np.asarray(expected, np.float64), rtol=tol, atol=tol
    )
