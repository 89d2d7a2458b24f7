"""Suite-wide settings (silent rank promotion is an error, Keras runs on the JAX backend) and
fixtures shared by several test modules."""

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


@pytest.fixture
def scan_unrolls(monkeypatch):
    """The ``unroll`` of every ``lax.scan`` call the test makes, in order (a spy on
    ``jax.lax.scan``; rnnjax's modules call it through ``jax.lax``)."""
    seen = []
    real_scan = jax.lax.scan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("unroll"))
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(jax.lax, "scan", spy)
    return seen
