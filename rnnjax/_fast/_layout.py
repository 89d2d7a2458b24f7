"""Stored layouts of the fast path's loop weights (feature-major for small batches on XLA:CPU).

Each step of a recurrence multiplies a thin ``[B, H]`` state by the same ``[H, G*H]`` weight.
For small batches and large ``H`` (the ``feature_major_*`` rows of ``rnnjax._fast._plan``),
XLA:CPU's GEMM is faster computing the product transposed, ``[G*H, H] x [H, B]`` (the weight as
the left operand, stored transposed once per sequence), than as ``[B, H] x [H, G*H]``.
:class:`LoopWeight` stands in for a
weight inside the fused loops: :class:`LoopMatmul` (the matmul the gate math of ``rnnjax._gates``
is given) sees it and computes ``(W^T a^T)^T``, with
optimisation barriers so that XLA cannot fold the transposes back into the slow form. It also
lays out the tangent loop's weight so that the backward loop's ``ct W^T`` is a plain GEMM on a
stored ``W^T`` (row-major) or ``W`` (feature-major) rather than a transposed-operand one. Only
the layout changes; the values are the same products.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import _gates


class LoopWeight:
    """A weight ``w [K, N]`` inside the fused loops, stored so that ``a @ w`` is a plain GEMM.

    ``feature_major`` computes ``(w^T a^T)^T`` (``a^T`` stored transposed); otherwise ``a @ w``
    row-major. ``transposed`` stores ``w^T`` physically. The forward loops use
    ``LoopWeight.forward(w, feature_major)``; the tangent loop uses ``LoopWeight.tangent``, whose
    layout makes the product slow in forward mode but its transpose (reverse mode: the backward
    loop's ``ct W^T``) a plain GEMM: feature-major ``w [K, N] x ct^T [N, B]``, row-major
    ``ct [B, N] x w^T [N, K]``. Lives only inside the fused loops (closed over, never passed
    through a transformation).
    """

    __slots__ = ("stored", "transposed", "feature_major")

    def __init__(self, stored: jax.Array, transposed: bool, feature_major: bool):
        self.stored, self.transposed, self.feature_major = stored, transposed, feature_major

    @classmethod
    def forward(cls, w: jax.Array, feature_major: bool) -> "LoopWeight":
        if feature_major:
            return cls(lax.optimization_barrier(w.T), True, True)
        return cls(w, False, False)

    @classmethod
    def tangent(cls, w: jax.Array, feature_major: bool) -> "LoopWeight":
        if feature_major:
            return cls(w, False, True)
        return cls(lax.optimization_barrier(w.T), True, False)

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

    def __getitem__(self, index) -> "LoopWeight":
        """``w[rows, columns]`` (two slices), in the same layout."""
        rows, columns = index
        stored = self.stored[columns, rows] if self.transposed else self.stored[rows, columns]
        return LoopWeight(stored, self.transposed, self.feature_major)

    def matmul(self, a: jax.Array, dtype=None) -> jax.Array:
        """``a @ w`` for ``a [..., K]``; ``dtype`` as ``rnnjax._gates.dot``."""
        leading, inputs = a.shape[:-1], a.shape[-1]
        w = self.stored
        accumulate = jnp.promote_types(a.dtype, w.dtype)
        operands = accumulate if dtype is None else dtype
        a, w = a.reshape(-1, inputs).astype(operands), w.astype(operands)
        weight_contract = 1 if self.transposed else 0
        if not self.feature_major:
            product = lax.dot_general(
                a, w, (((1,), (weight_contract,)), ((), ())), preferred_element_type=accumulate
            )
            return product.reshape(*leading, product.shape[-1])
        a_t = lax.optimization_barrier(a.T)
        product = lax.dot_general(
            w, a_t, (((weight_contract,), (0,)), ((), ())), preferred_element_type=accumulate
        )
        return lax.optimization_barrier(product).T.reshape(*leading, product.shape[0])


class LoopMatmul(NamedTuple):
    """The ``matmul(a, w)`` the fast path gives the gate math: :class:`LoopWeight` operands in
    their stored layout, plain arrays as ``rnnjax._gates.dot``."""

    dtype: object

    def __call__(self, a: jax.Array, w) -> jax.Array:
        if isinstance(w, LoopWeight):
            return w.matmul(a, self.dtype)
        return _gates.dot(a, w, self.dtype)


def params_for_loop(params, layout: str, *, tangent: bool = False):
    """``params`` with the weights as :class:`LoopWeight` for the forward or the tangent loop
    (the row-major forward loop keeps them as they are; the tangent loop reads only ``w_h``).
    ``layout`` is a :class:`rnnjax._fast.Plan`'s."""
    feature_major = layout == "feature_major"
    if tangent:
        return params._replace(w_h=LoopWeight.tangent(params.w_h, feature_major))
    if not feature_major:
        return params
    return params._replace(
        w_x=LoopWeight.forward(params.w_x, True), w_h=LoopWeight.forward(params.w_h, True)
    )
