"""Feature-major recurrent matmuls for small batches on XLA:CPU.

Each step of a recurrence multiplies a thin ``[B, H]`` state by the same ``[H, G*H]`` weight.
For ``B`` up to about 32 and ``H >= 256``, XLA:CPU's GEMM is 1.3-4x faster computing the product
transposed, ``[G*H, H] x [H, B]`` (the weight as the left operand, stored transposed once per
sequence), than as ``[B, H] x [H, G*H]`` (measured on the project's 2-core AMD EPYC, one core:
LSTM step loop at ``B=16``: ``H=512`` 82 -> 52 ms, ``H=1024`` 578 -> 184 ms for ``T=100``); from
``B = 64`` on, the row-major form is as fast or faster. :class:`FeatureMajor` stands in for a
weight inside the fused loops: ``rnnjax._cells._dot`` sees it and computes ``(W^T a^T)^T``, with
optimisation barriers so that XLA cannot fold the transposes back into the slow form. Only the
layout changes; the values are the same products.
"""

import jax
import jax.numpy as jnp
from jax import lax


class FeatureMajor:
    """A weight ``w [K, N]`` whose products ``a @ w`` are computed as ``(w^T a^T)^T``.

    ``FeatureMajor.of(w)`` stores ``w^T`` physically: ``w_t [N, K] x a^T [K, B]`` is a plain GEMM
    (the forward loops). ``FeatureMajor.for_tangent(w)`` keeps ``w`` and contracts its rows,
    which is slow in forward mode but transposes (reverse mode, the backward loop) into the plain
    GEMM ``w [K, N] x ct^T [N, B]``. Lives only inside the fused loops (closed over, never passed
    through a transformation).
    """

    __slots__ = ("stored", "transposed")

    def __init__(self, stored: jax.Array, transposed: bool):
        self.stored, self.transposed = stored, transposed

    @classmethod
    def of(cls, w: jax.Array) -> "FeatureMajor":
        return cls(lax.optimization_barrier(w.T), True)

    @classmethod
    def for_tangent(cls, w: jax.Array) -> "FeatureMajor":
        return cls(w, False)

    @property
    def shape(self) -> tuple[int, int]:
        shape = tuple(self.stored.shape)
        return tuple(reversed(shape)) if self.transposed else shape

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self):
        return self.stored.dtype

    def __getitem__(self, index) -> "FeatureMajor":
        """``w[rows, columns]`` (two slices), in the same layout."""
        rows, columns = index
        if self.transposed:
            return FeatureMajor(self.stored[columns, rows], True)
        return FeatureMajor(self.stored[rows, columns], False)

    def matmul(self, a: jax.Array, dtype=None) -> jax.Array:
        """``a @ w`` for ``a [..., K]``; ``dtype`` as ``rnnjax._cells._dot``."""
        leading, inputs = a.shape[:-1], a.shape[-1]
        a_t = lax.optimization_barrier(a.reshape(-1, inputs).T)
        w = self.stored
        accumulate = jnp.promote_types(a.dtype, w.dtype)
        operands = accumulate if dtype is None else dtype
        a_t, w = a_t.astype(operands), w.astype(operands)
        contract = 1 if self.transposed else 0
        product = lax.dot_general(
            w, a_t, (((contract,), (0,)), ((), ())), preferred_element_type=accumulate
        )
        return lax.optimization_barrier(product).T.reshape(*leading, product.shape[0])


def use_feature_major(batch: int, hidden: int) -> bool:
    """Whether the loops of a ``batch`` x ``hidden`` recurrence should run feature-major.

    The thresholds come from the step-loop sweep in this module's docstring (XLA:CPU only; other
    backends keep the row-major form).
    """
    if jax.default_backend() != "cpu":
        return False
    return hidden >= 256 and batch <= 32 and batch * hidden >= 512


def params_for_loop(params, feature_major: bool, *, tangent: bool = False):
    """``params`` with ``w_x`` and ``w_h`` as :class:`FeatureMajor` when ``feature_major``
    (``for_tangent`` weights in the tangent loop, ``of`` in the forward loops)."""
    if not feature_major:
        return params
    wrap = FeatureMajor.for_tangent if tangent else FeatureMajor.of
    return params._replace(w_x=wrap(params.w_x), w_h=wrap(params.w_h))
