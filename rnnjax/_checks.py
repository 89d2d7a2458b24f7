"""Trace-time validation shared by cells, scan and layers.

Every message names the argument, what was expected and what arrived, so a user can fix the call
without reading the source.
"""

import jax
import jax.numpy as jnp
import numpy as np


def floating_array(x, name: str) -> jax.Array:
    """Return ``x`` as an array, raising ``TypeError`` unless its dtype is floating point."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} must have a floating-point dtype (float32, float64, bfloat16, float16); "
            f"got dtype {x.dtype}. Cast it first, e.g. {name}.astype(jnp.float32)."
        )
    return x


def floating_dtype(dtype, name: str) -> None:
    """Raise ``TypeError`` unless ``dtype`` names a floating-point dtype."""
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(
            f"{name} must be a floating-point dtype (jnp.float32, jnp.float64, jnp.bfloat16, "
            f"jnp.float16); got {dtype!r}."
        )


def callable_or_none(value, name: str, example: str) -> None:
    """Raise ``TypeError`` unless ``value`` is callable (or ``None``); ``example`` shows a fix."""
    if value is not None and not callable(value):
        raise TypeError(
            f"{name} must be a function (for example {example}) or None; "
            f"got {type(value).__name__} {value!r}."
        )


def boolean(value, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a Python or NumPy bool (a static flag)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(
            f"{name} must be a bool (True or False); got {type(value).__name__} {value!r}."
        )


def cell_params(params, params_type: type, name: str, label: str) -> None:
    """Raise ``TypeError`` unless ``params`` is a ``params_type`` (the params of cell ``name``,
    spelled ``label`` in messages) whose array fields are all floating point (integer weights
    would be promoted silently and give a cell nobody asked for)."""
    if not isinstance(params, params_type):
        raise TypeError(
            f"params must be {params_type.__name__} (from {name}(...).init) for {label}; "
            f"got {type(params).__name__}."
        )
    for field, value in zip(params._fields, params, strict=True):
        if value is not None and not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise TypeError(
                f"params.{field} of {label} must have a floating-point dtype (float32, float64, "
                f"bfloat16, float16); got dtype {jnp.result_type(value)}."
            )


def rank(x: jax.Array, expected: int, name: str, layout: str) -> None:
    """Raise ``ValueError`` unless ``x.ndim == expected``; ``layout`` spells the expected shape."""
    if x.ndim != expected:
        raise ValueError(
            f"{name} must have rank {expected} with shape {layout}; got shape {tuple(x.shape)} "
            f"(rank {x.ndim})."
        )


def is_concrete(x) -> bool:
    """True when ``x`` holds known values at trace time (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def lengths(lengths, batch_shape: tuple[int, ...], max_length: int, name: str = "lengths"):
    """Validate per-example sequence lengths: integer dtype, shape ``batch_shape``, 0 <= l <= T.

    The range is checked whenever the values are concrete; under ``jit`` they are traced and are
    clipped to ``[0, max_length]`` by the scan instead.
    """
    arr = jnp.asarray(lengths)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype; got dtype {arr.dtype}.")
    if tuple(arr.shape) != tuple(batch_shape):
        raise ValueError(
            f"{name} must have shape {tuple(batch_shape)} (one length per sequence); "
            f"got shape {tuple(arr.shape)}."
        )
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > max_length):
            raise ValueError(
                f"{name} must lie in [0, {max_length}] (the padded sequence length); "
                f"got values in [{values.min()}, {values.max()}]."
            )
    return arr


def unroll(unroll) -> int | bool | None:
    """The checked ``unroll`` for ``lax.scan``: a positive int or a bool (``True``: unroll
    fully); ``None`` stays ``None`` (the fast path's plan picks it: ``rnnjax._fast.plan``)."""
    if unroll is None:
        return None
    if isinstance(unroll, bool | np.bool_):
        return bool(unroll)
    if not isinstance(unroll, int | np.integer) or unroll < 1:
        raise ValueError(
            f"unroll must be a positive int, a bool (True: unroll fully) or None (the backend's "
            f"default); got {unroll!r}."
        )
    return int(unroll)


def resets(resets, shape: tuple, name: str = "resets"):
    """``resets`` as a bool array of ``shape``, or ``None``."""
    if resets is None:
        return None
    arr = jnp.asarray(resets)
    if arr.dtype != jnp.bool_:
        raise TypeError(
            f"{name} must have dtype bool (True where a segment starts); got {arr.dtype}."
        )
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(arr.shape)}.")
    return arr


def prng_key(key, name: str = "key") -> None:
    """Raise a ``TypeError`` naming ``name`` unless ``key`` is a typed or raw ``uint32[2]`` key."""
    typed = (
        isinstance(key, jax.Array)
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.shape == ()
    )
    raw = isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.shape == (2,)
    if not (typed or raw):
        raise TypeError(
            f"{name} must be a PRNG key (jax.random.key or jax.random.PRNGKey) or None; got "
            f"{type(key).__name__} with dtype {getattr(key, 'dtype', None)} and shape "
            f"{getattr(key, 'shape', None)}."
        )
