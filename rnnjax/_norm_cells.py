"""Layer-normalised LSTM and GRU cells (Ba, Kiros & Hinton 2016), built on the core ``_make_cell``.

Layer normalisation rescales the input and recurrent pre-activations of every step to zero mean and
unit variance over the hidden units, which keeps gate inputs in the sigmoid's sensitive range and
speeds up training of long sequences. The normalisation of ``x W_x`` does not depend on the state,
so ``project_inputs`` still runs once per sequence (one ``[T, D] x [D, G*H]`` matmul) and
``rnnjax.scan``, ``rnn``, ``bidirectional`` and ``stack`` take these cells unchanged.

The paper's separate shifts of the two normalisations are omitted: they add to the gate bias ``b``
and would only duplicate it. What remains is a learned gain per normalisation (``scale_x``,
``scale_h``, ``scale_c``) and the LSTM's output shift ``bias_c``.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _initializers as inits
from rnnjax._cells import (
    LSTM_GATES,
    Cell,
    Kernels,
    LSTMState,
    Partial,
    RNNState,
    _add_bias,
    _dot,
    _make_cell,
    _split,
)


class LayerNormLSTMParams(NamedTuple):
    """Layer-normalised LSTM parameters, gates (i, f, g, o).

    ``w_x [D, 4H]``, ``w_h [H, 4H]``, ``b [4H]`` as in :class:`rnnjax.LSTMParams`; gains
    ``scale_x [4H]`` and ``scale_h [4H]`` of the normalised ``x W_x`` and ``h W_h``; gain
    ``scale_c [H]`` and shift ``bias_c [H]`` of the normalised cell state read by the output.
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    scale_x: jax.Array
    scale_h: jax.Array
    scale_c: jax.Array
    bias_c: jax.Array


class LayerNormGRUParams(NamedTuple):
    """Layer-normalised GRU parameters, gates (r, z, n).

    ``w_x [D, 3H]``, ``w_h [H, 3H]``, ``b [3H]``, the candidate's recurrent bias ``b_hn [H]``
    (applied inside the reset gate), and gains ``scale_x [3H]``, ``scale_h [3H]``.
    """

    w_x: jax.Array
    w_h: jax.Array
    b: jax.Array
    b_hn: jax.Array
    scale_x: jax.Array
    scale_h: jax.Array


def _scale(z: jax.Array, gain: jax.Array) -> jax.Array:
    return z * gain.reshape((1,) * (z.ndim - 1) + gain.shape)


def _normalize(z: jax.Array, groups: int, epsilon: float) -> jax.Array:
    """Zero mean, unit variance over each of ``groups`` equal slices of the last axis of ``z``."""
    grouped = z.reshape(z.shape[:-1] + (groups, z.shape[-1] // groups))
    mean = jnp.mean(grouped, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(grouped - mean), axis=-1, keepdims=True)
    return ((grouped - mean) * jax.lax.rsqrt(variance + epsilon)).reshape(z.shape)


def _check_fields(label: str, params, params_type: type, shapes: dict) -> None:
    if not isinstance(params, params_type):
        raise TypeError(
            f"params must be {params_type.__name__} (from {label.split('(')[0]}(...).init) for "
            f"{label}; got {type(params).__name__}."
        )
    for field, shape in shapes.items():
        actual = getattr(params, field)
        if actual is None or tuple(jnp.shape(actual)) != shape:
            got = None if actual is None else tuple(jnp.shape(actual))
            raise ValueError(
                f"params do not match {label}: expected params.{field} of shape {shape}, got {got}."
            )


def _checked_update(update, label, params_type, extra_shapes, groups, params, state, projected):
    _check_fields(label, params, params_type, dict(extra_shapes))
    return update(params, state, projected, groups)


def _normalized_project(base_project, label, params_type, extra_shapes, groups, epsilon, params, x):
    _check_fields(label, params, params_type, dict(extra_shapes))
    # The core's projection validates params and x; its bias is added after normalising.
    xw = base_project(params._replace(b=jnp.zeros_like(params.b)), x)
    return _add_bias(_scale(_normalize(xw, groups, epsilon), params.scale_x), params.b)


def _normalized_step(recur, project_inputs, params, state, x):
    return recur(params, state, project_inputs(params, x))


def _normalized_cell(name, hidden_size, num_gates, params_type, state_type, make_params, update,
                     extra_shapes, per_gate, epsilon, config):  # fmt: skip
    """``_make_cell`` with ``project_inputs`` returning ``LN(x W_x) * scale_x + b`` (its functions
    bound with ``Partial``, so equal constructions give equal cells)."""
    groups = num_gates if per_gate else 1
    label = f"{name}(hidden_size={hidden_size})"
    extra = tuple(extra_shapes.items())
    checked_update = Partial(_checked_update, (update, label, params_type, extra, groups))
    base = _make_cell(
        name, hidden_size, num_gates, params_type, state_type, make_params, checked_update, config
    )
    project_inputs = Partial(
        _normalized_project, (base.project_inputs, label, params_type, extra, groups, epsilon)
    )
    step = Partial(_normalized_step, (base.recur, project_inputs))
    # A record of its own functions (no fast-path kind): a replaced ``step`` is then honoured.
    kernels = Kernels(name, base.config, step, project_inputs, base.recur)
    return base._replace(project_inputs=project_inputs, step=step, kernels=kernels)


def _lstm_params(hidden_size, forget_bias, kernel_init, recurrent_init, param_dtype, key, inputs):
    fused = 4 * hidden_size
    key_x, key_h = jax.random.split(key)
    w_x = inits.per_gate(kernel_init, key_x, (inputs, fused), 4, param_dtype)
    w_h = inits.per_gate(recurrent_init, key_h, (hidden_size, fused), 4, param_dtype)
    b = inits.gate_bias(hidden_size, LSTM_GATES, {"f": forget_bias}, param_dtype)
    ones, zeros = jnp.ones((fused,), param_dtype), jnp.zeros((hidden_size,), param_dtype)
    return LayerNormLSTMParams(w_x, w_h, b, ones, ones, ones[:hidden_size], zeros)


def _lstm_update(dtype, epsilon, params, state, projected, groups):
    hw = _normalize(_dot(state.h, params.w_h, dtype), groups, epsilon)
    i, f, g, o = _split(projected + _scale(hw, params.scale_h), 4)
    c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    c_out = _add_bias(_scale(_normalize(c, 1, epsilon), params.scale_c), params.bias_c)
    return LSTMState(jax.nn.sigmoid(o) * jnp.tanh(c_out), c)


def _gru_params(hidden_size, kernel_init, recurrent_init, param_dtype, key, inputs):
    fused = 3 * hidden_size
    key_x, key_h = jax.random.split(key)
    w_x = inits.per_gate(kernel_init, key_x, (inputs, fused), 3, param_dtype)
    w_h = inits.per_gate(recurrent_init, key_h, (hidden_size, fused), 3, param_dtype)
    zeros, ones = jnp.zeros((fused,), param_dtype), jnp.ones((fused,), param_dtype)
    return LayerNormGRUParams(w_x, w_h, zeros, zeros[:hidden_size], ones, ones)


def _gru_update(dtype, epsilon, params, state, projected, groups):
    hw = _scale(_normalize(_dot(state.h, params.w_h, dtype), groups, epsilon), params.scale_h)
    x_r, x_z, x_n = _split(projected, 3)
    h_r, h_z, h_n = _split(hw, 3)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    candidate = jnp.tanh(x_n + r * _add_bias(h_n, params.b_hn))
    return RNNState((1.0 - z) * state.h + z * candidate)


def layer_norm_lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    per_gate: bool = False,
    epsilon: float = 1e-5,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    recurrent_init: inits.Initializer = inits.orthogonal,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Layer-normalised LSTM cell (Ba et al. 2016, section 3.1).

    With :math:`\mathrm{LN}(z) = (z - \mu(z)) / \sqrt{\sigma^2(z) + \epsilon}` over hidden units:

    .. math::
        [i, f, g, o] = \mathrm{LN}(x_t W_x) \odot s_x + \mathrm{LN}(h_{t-1} W_h) \odot s_h + b

        c_t = \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g), \qquad
        h_t = \sigma(o) \odot \tanh(\mathrm{LN}(c_t) \odot s_c + b_c)

    The carried cell state :math:`c_t` is not normalised; only its read-out is.

    Args:
      hidden_size: ``H``.
      forget_bias: initial forget-gate block of ``b``.
      per_gate: normalise each ``[H]`` gate block of the ``[4H]`` pre-activations on its own (as
        TensorFlow's ``LayerNormBasicLSTMCell``) instead of all ``4H`` together (the paper).
      epsilon: added to the variance.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x``.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``w_h``.
      dtype: matmul dtype; normalisation and state keep their own dtype.
      param_dtype: dtype of the initialised parameters (gains start at 1, shifts at 0).

    Returns:
      A :class:`rnnjax.Cell` with params :class:`LayerNormLSTMParams` and state
      :class:`rnnjax.LSTMState`.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.layer_norm_lstm(8)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> final_state, ys = rnnjax.scan(cell, params, jnp.ones((5, 3)))   # ys: (5, 8)
    """
    fused = 4 * hidden_size

    make_params = Partial(
        _lstm_params, (hidden_size, forget_bias, kernel_init, recurrent_init, param_dtype)
    )
    update = Partial(_lstm_update, (dtype, epsilon))
    extra = {"scale_x": (fused,), "scale_h": (fused,), "scale_c": (hidden_size,),
             "bias_c": (hidden_size,)}  # fmt: skip
    config = {"forget_bias": forget_bias, "per_gate": per_gate, "epsilon": epsilon,
              "dtype": dtype, "param_dtype": param_dtype}  # fmt: skip
    return _normalized_cell(
        "layer_norm_lstm", hidden_size, 4, LayerNormLSTMParams, LSTMState, make_params, update,
        extra, per_gate, epsilon, config,
    )  # fmt: skip


def layer_norm_gru(
    hidden_size: int,
    *,
    per_gate: bool = False,
    epsilon: float = 1e-5,
    kernel_init: inits.Initializer = inits.glorot_uniform,
    recurrent_init: inits.Initializer = inits.orthogonal,
    dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    r"""Layer-normalised GRU cell: Ba et al.'s normalisation on the seed's GRU, reset after.

    With ``[x_r, x_z, x_n] = LN(x_t W_x) s_x + b`` and ``[h_r, h_z, h_n] = LN(h_{t-1} W_h) s_h``:

    .. math::
        r = \sigma(x_r + h_r), \qquad z = \sigma(x_z + h_z), \qquad
        \tilde h = \tanh(x_n + r \odot (h_n + b_{hn}))

        h_t = (1 - z) \odot h_{t-1} + z \odot \tilde h

    The reset gate acts after the recurrent matmul (``reset_after=True`` in :func:`rnnjax.gru`),
    since ``h_{t-1} W_h`` must be normalised as a whole.

    Args:
      hidden_size: ``H``.
      per_gate: normalise each ``[H]`` gate block on its own instead of all ``3H`` together.
      epsilon: added to the variance.
      kernel_init: initialiser of each ``[D, H]`` gate block of ``w_x``.
      recurrent_init: initialiser of each ``[H, H]`` gate block of ``w_h``.
      dtype: matmul dtype; normalisation and state keep their own dtype.
      param_dtype: dtype of the initialised parameters (gains start at 1, biases at 0).

    Returns:
      A :class:`rnnjax.Cell` with params :class:`LayerNormGRUParams` and state
      :class:`rnnjax.RNNState`.

    >>> import jax
    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> cell = rnnjax.layer_norm_gru(8, per_gate=True)
    >>> params = cell.init(jax.random.key(0), input_size=3)
    >>> state, y = cell.step(params, cell.initial_state(), jnp.ones(3))
    """
    fused = 3 * hidden_size

    make_params = Partial(_gru_params, (hidden_size, kernel_init, recurrent_init, param_dtype))
    update = Partial(_gru_update, (dtype, epsilon))
    extra = {"b_hn": (hidden_size,), "scale_x": (fused,), "scale_h": (fused,)}
    config = {"per_gate": per_gate, "epsilon": epsilon, "dtype": dtype, "param_dtype": param_dtype}
    return _normalized_cell(
        "layer_norm_gru", hidden_size, 3, LayerNormGRUParams, RNNState, make_params, update,
        extra, per_gate, epsilon, config,
    )  # fmt: skip
