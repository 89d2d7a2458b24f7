"""Suite-wide settings: silent rank promotion is an error, Keras runs on the JAX backend."""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (``jax.enable_x64``)."""
    with jax.enable_x64(True):
        yield
