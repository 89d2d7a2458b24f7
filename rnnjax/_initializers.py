"""Parameter initialisers for fused-gate recurrent kernels.

Recurrent cells store their gates side by side along the last axis of one kernel (``[.., G*H]``)
so that a step is one matmul. Initialising the fused matrix as a whole (Flax NNX and Keras apply
``orthogonal`` to the ``[H, 4H]`` recurrent kernel) leaves no gate block orthogonal: at H = 64 the
singular values of each block spread over 0.001-0.94. The helpers here initialise each ``[D, H]``
gate block separately and concatenate, so every gate sees a well-conditioned matrix.

Low-precision parameter dtypes (``bfloat16``, ``float16``) are drawn in float32 and cast: the
orthogonal initialiser's QR has no bfloat16 kernel on CPU, and a float32 draw rounded once keeps
each block as close to orthogonal as the dtype can hold.
"""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]

glorot_uniform: Initializer = jax.nn.initializers.glorot_uniform()
lecun_uniform: Initializer = jax.nn.initializers.lecun_uniform()
orthogonal: Initializer = jax.nn.initializers.orthogonal()
zeros: Initializer = jax.nn.initializers.zeros


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype an initialiser draws in for parameters of ``dtype``: float32 for floating
    dtypes narrower than 32 bits (``bfloat16``, ``float16``, ``float8``), ``dtype`` otherwise."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) and dtype.itemsize < 4:
        return jnp.dtype(jnp.float32)
    return dtype


def per_gate(
    init: Initializer, key: jax.Array, shape: tuple[int, int], num_gates: int, dtype
) -> jax.Array:
    """Initialise a fused ``[rows, num_gates * H]`` kernel one ``[rows, H]`` gate block at a time.

    Args:
      init: a ``jax.nn.initializers`` function ``init(key, shape, dtype)``.
      key: PRNG key.
      shape: the fused shape ``(rows, num_gates * H)``.
      num_gates: number of gate blocks along the last axis.
      dtype: parameter dtype.

    Returns:
      The fused kernel of ``shape`` and ``dtype``, each gate block drawn independently from
      ``init`` (in float32 for a narrower floating ``dtype``, then cast).

    >>> import jax, jax.numpy as jnp
    >>> from rnnjax import _initializers as inits
    >>> w_h = inits.per_gate(inits.orthogonal, jax.random.key(0), (8, 32), 4, jnp.bfloat16)
    >>> w_h.shape, w_h.dtype
    ((8, 32), dtype(bfloat16))
    """
    rows, fused = shape
    hidden = fused // num_gates
    keys = jax.random.split(key, num_gates)
    draw = compute_dtype(dtype)
    blocks = [init(k, (rows, hidden), draw) for k in keys]
    return jnp.concatenate(blocks, axis=-1).astype(dtype)


def gate_bias(hidden_size: int, gates: Sequence[str], values: dict[str, float], dtype) -> jax.Array:
    """A fused ``[G*H]`` bias, zero but for the gates named in ``values`` (``{"f": 1.0}``)."""
    blocks = [jnp.full((hidden_size,), values.get(gate, 0.0), dtype) for gate in gates]
    return jnp.concatenate(blocks)
