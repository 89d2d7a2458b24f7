r"""PyTorch interop: ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` to and from rnnjax stacks.

Weights move between torch's column-vector layout (``weight_ih_l{k} [G*H, D]``, ``y = W x + b``)
and rnnjax's row-vector one (``w_x [D, G*H]``, ``y = x w_x + b``) by a transpose. The gate orders
agree (LSTM i, f, g, o; GRU r, z, n). Torch's two biases ``b_ih + b_hh`` become rnnjax's one
``b``, except the GRU's recurrent candidate bias ``b_hn``, which acts inside the reset gate and
stays separate (rnnjax ``gru(reset_after=True)``).

GRU update gate: torch computes ``h_t = (1 - z) * n + z * h_{t-1}``, rnnjax (the seed's equations)
``h_t = (1 - z) * h_{t-1} + z * n``. Since :math:`\sigma(-a) = 1 - \sigma(a)`, negating the
update gate's input weights, recurrent weights and bias maps one onto the other exactly.
"""

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _checks
from rnnjax._cells import (
    GRU_GATES,
    LSTM_GATES,
    GRUParams,
    LSTMParams,
    LSTMState,
    RNNParams,
    RNNState,
    gru,
    lstm,
    simple_rnn,
)
from rnnjax._layers import BidirectionalParams, stack
from rnnjax.interop._common import (
    ConvertedLayer,
    array_module,
    check_zero,
    reorder_gates,
    spec_of,
    to_numpy,
)
from rnnjax.interop._common import with_spec as _with_spec

TORCH_LSTM_GATES = ("i", "f", "g", "o")
"""Gate order of ``torch.nn.LSTM``'s fused weights."""

TORCH_GRU_GATES = ("r", "z", "n")
"""Gate order of ``torch.nn.GRU``'s fused weights."""

_MODES = ("RNN_TANH", "RNN_RELU", "LSTM", "GRU")
_PARAMS_MODE = {LSTMParams: "LSTM", GRUParams: "GRU"}


class TorchSpec(NamedTuple):
    """The options of a ``torch.nn.RNN``/``LSTM``/``GRU``; ``mode`` is torch's ``module.mode``,
    ``dropout`` its inter-layer dropout rate (``rnnjax.stack(..., dropout=)``)."""

    mode: str
    input_size: int
    hidden_size: int
    num_layers: int
    bias: bool
    batch_first: bool
    bidirectional: bool
    dropout: float = 0.0


def _cell(spec: TorchSpec):
    if spec.mode == "LSTM":
        return lstm(spec.hidden_size, forget_bias=0.0)
    if spec.mode == "GRU":
        return gru(spec.hidden_size, reset_after=True)
    activation = jnp.tanh if spec.mode == "RNN_TANH" else jax.nn.relu
    return simple_rnn(spec.hidden_size, activation)


def torch_layout(spec: TorchSpec) -> ConvertedLayer:
    """An rnnjax stack that takes and returns what the torch module of ``spec`` does.

    ``apply(params, x, lengths=None, *, initial_state=None, key=None)`` takes ``x [B, T, D]`` when
    ``batch_first`` else ``[T, B, D]`` (or unbatched ``[T, D]``), and returns ``(output, h_n)``
    (RNN, GRU) or ``(output, (h_n, c_n))`` (LSTM), with ``output [B, T, dirs*H]`` (``[T, B, ..]``
    when not ``batch_first``) and ``h_n, c_n [num_layers*dirs, B, H]`` ordered layer by layer,
    forward before backward, as torch orders them. ``initial_state`` is ``h_0`` or ``(h_0, c_0)``
    in the same layout. ``lengths [B]`` gives what ``pack_padded_sequence`` gives: outputs zero
    past each length, ``h_n`` taken at the last valid step. Params are those of
    ``rnnjax.stack`` (a tuple with one entry per layer), so they also run without this wrapper.
    ``spec.dropout`` drops between layers, as torch does in train mode, only when ``apply`` gets a
    PRNG ``key`` (torch's eval mode is ``key=None``).
    """
    cell = _cell(spec)
    dirs = 2 if spec.bidirectional else 1
    core = stack(
        [(cell, cell) if dirs == 2 else cell] * spec.num_layers,
        return_sequences=True,
        return_state=True,
        dropout=spec.dropout,
    )
    is_lstm = spec.mode == "LSTM"
    layout = "(B, T, input_size)" if spec.batch_first else "(T, B, input_size)"

    def initial_states(initial_state, batch: int | None):
        expected = (spec.num_layers * dirs,) + (() if batch is None else (batch,))
        expected += (spec.hidden_size,)
        if is_lstm and not (isinstance(initial_state, tuple | list) and len(initial_state) == 2):
            given = (
                f"a {type(initial_state).__name__} of length {len(initial_state)}"
                if isinstance(initial_state, tuple | list)
                else f"{type(initial_state).__name__} of shape {tuple(np.shape(initial_state))}"
            )
            raise ValueError(
                f"initial_state of an LSTM must be the pair (h_0, c_0), each of shape {expected}, "
                f"as torch takes it; got {given}."
            )
        parts = tuple(initial_state) if is_lstm else (initial_state,)
        leaves = []
        for name, part in zip(("h_0", "c_0"), parts, strict=False):
            part = _checks.floating_array(part, f"initial_state {name}")
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"initial_state {name} must have shape {expected} (num_layers * directions, "
                    f"batch, hidden_size), as torch takes it; got {tuple(part.shape)}."
                )
            leaves.append(part if batch is not None else part[:, None])
        state_type = LSTMState if is_lstm else RNNState
        states = [state_type(*(leaf[i] for leaf in leaves)) for i in range(expected[0])]
        per_layer = [tuple(states[k * dirs : (k + 1) * dirs]) for k in range(spec.num_layers)]
        return tuple(s if dirs == 2 else s[0] for s in per_layer)

    def apply(params, x, lengths=None, *, initial_state=None, key=None):
        x = _checks.floating_array(x, "x")
        if x.ndim not in (2, 3):
            raise ValueError(
                f"x must have shape {layout} or (T, input_size) unbatched; "
                f"got shape {tuple(x.shape)}."
            )
        unbatched = x.ndim == 2
        x = x[None] if unbatched else (x if spec.batch_first else jnp.swapaxes(x, 0, 1))
        initial = None
        if initial_state is not None:
            initial = initial_states(initial_state, None if unbatched else x.shape[0])
        ys, states = core.apply(params, x, lengths, initial_state=initial, key=key)
        flat = [s for layer in states for s in (layer if dirs == 2 else (layer,))]
        h_n = jnp.stack([s.h for s in flat])
        final = (h_n, jnp.stack([s.c for s in flat])) if is_lstm else h_n
        if unbatched:
            return ys[0], jax.tree_util.tree_map(lambda leaf: leaf[:, 0], final)
        return (ys if spec.batch_first else jnp.swapaxes(ys, 0, 1)), final

    return _with_spec((core.init, apply, core.output_shape), spec)


def _suffix(layer: int, direction: int) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def params_from_arrays(spec: TorchSpec, arrays: Mapping[str, Any]) -> tuple:
    """rnnjax stack params from torch's named parameters (``weight_ih_l0``, ...).

    NumPy arrays in give NumPy arrays out; JAX arrays (or tracers) go through ``jnp`` operations
    only, so gradients flow back to the torch-layout arrays.
    """
    dirs = 2 if spec.bidirectional else 1
    layers = []
    for k in range(spec.num_layers):
        cells = []
        for d in range(dirs):
            suffix = _suffix(k, d)
            w_ih, w_hh = arrays["weight_ih" + suffix], arrays["weight_hh" + suffix]
            if spec.bias:
                b_ih, b_hh = arrays["bias_ih" + suffix], arrays["bias_hh" + suffix]
            else:
                b_ih = b_hh = array_module(w_ih).zeros(w_ih.shape[:1], w_ih.dtype)
            cells.append(_cell_params(spec.mode, w_ih, w_hh, b_ih, b_hh))
        layers.append(BidirectionalParams(*cells) if dirs == 2 else cells[0])
    return tuple(layers)


def _cell_params(mode, w_ih, w_hh, b_ih, b_hh):
    xp = array_module(w_ih, w_hh, b_ih, b_hh)
    if mode == "GRU":
        order = (TORCH_GRU_GATES, GRU_GATES)
        b_r, b_z, b_in = xp.split(b_ih, 3)
        h_r, h_z, h_n = xp.split(b_hh, 3)
        summed = xp.concatenate([b_r + h_r, b_z + h_z, b_in])
        return GRUParams(
            reorder_gates(w_ih.T, *order, negate=("z",)),
            reorder_gates(w_hh.T, *order, negate=("z",)),
            reorder_gates(summed, *order, negate=("z",)),
            h_n,
        )
    if mode == "LSTM":
        order = (TORCH_LSTM_GATES, LSTM_GATES)
        return LSTMParams(
            reorder_gates(w_ih.T, *order),
            reorder_gates(w_hh.T, *order),
            reorder_gates(b_ih + b_hh, *order),
        )
    return RNNParams(w_ih.T, w_hh.T, b_ih + b_hh)


def arrays_from_params(spec: TorchSpec, params) -> dict[str, np.ndarray]:
    """Torch's named parameters from rnnjax stack params: the whole rnnjax bias goes to
    ``bias_ih``; ``bias_hh`` is zero except the GRU's ``b_hn`` block."""
    arrays = {}
    params = jax.tree_util.tree_map(to_numpy, params)
    for k, layer in enumerate(params):
        for d, p in enumerate(tuple(layer) if spec.bidirectional else (layer,)):
            suffix = _suffix(k, d)
            if spec.mode == "GRU":
                order = (GRU_GATES, TORCH_GRU_GATES)
                w_ih = reorder_gates(p.w_x, *order, negate=("z",)).T
                w_hh = reorder_gates(p.w_h, *order, negate=("z",)).T
                b_ih = reorder_gates(p.b, *order, negate=("z",))
                b_hh = np.concatenate([np.zeros_like(p.b_hn), np.zeros_like(p.b_hn), p.b_hn])
            elif spec.mode == "LSTM":
                order = (LSTM_GATES, TORCH_LSTM_GATES)
                w_ih = reorder_gates(p.w_x, *order).T
                w_hh = reorder_gates(p.w_h, *order).T
                b_ih = reorder_gates(p.b, *order)
                b_hh = np.zeros_like(b_ih)
            else:
                w_ih, w_hh, b_ih, b_hh = p.w_x.T, p.w_h.T, p.b, np.zeros_like(p.b)
            arrays["weight_ih" + suffix] = np.ascontiguousarray(w_ih)
            arrays["weight_hh" + suffix] = np.ascontiguousarray(w_hh)
            if spec.bias:
                arrays["bias_ih" + suffix], arrays["bias_hh" + suffix] = b_ih, b_hh
            else:
                check_zero(b_ih, f"params of layer {k} direction {d}: b")
                check_zero(b_hh, f"params of layer {k} direction {d}: b_hn")
    return arrays


def _import_torch():
    try:
        import torch
    except ImportError as error:  # pragma: no cover - torch is a dev dependency
        raise ImportError(
            "rnnjax.interop torch converters need PyTorch: pip install torch"
        ) from error
    return torch


def from_torch(module) -> tuple[ConvertedLayer, tuple]:
    """Convert a ``torch.nn.RNN`` (tanh or relu), ``torch.nn.LSTM`` or ``torch.nn.GRU``.

    Covers ``num_layers``, ``bidirectional``, ``bias=False`` (zero biases), ``batch_first`` and
    ``dropout`` (between layers, as ``rnnjax.stack(..., dropout=)``: applied only when
    ``model.apply`` gets a PRNG ``key``, so without one the model computes what the module computes
    in eval mode). GRU weights are converted to rnnjax's update convention by negating the update
    gate (see the module docstring).

    Args:
      module: the torch module (any device and floating dtype; its parameters are copied).

    Returns:
      ``(model, params)``: ``model`` is an rnnjax Layer in torch's layout (see
      :func:`torch_layout`): ``model.apply(params, x, lengths)`` returns ``(output, h_n)`` or
      ``(output, (h_n, c_n))`` as the module does, with ``lengths`` standing for
      ``pack_padded_sequence``. ``params`` is a tuple of per-layer params (``LSTMParams``, ... or
      ``BidirectionalParams``), those of ``rnnjax.stack``; ``model.spec`` is a :class:`TorchSpec`.

    Raises:
      TypeError: ``module`` is not one of the three recurrent modules.
      ValueError: an LSTM with ``proj_size > 0`` (rnnjax has no projected LSTM).

    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> import torch
    >>> module = torch.nn.GRU(3, 8, num_layers=2, batch_first=True)
    >>> model, params = rnnjax.interop.from_torch(module)
    >>> output, h_n = model.apply(params, jnp.ones((4, 10, 3)))   # (4, 10, 8), (2, 4, 8)
    """
    torch = _import_torch()
    kinds = (torch.nn.RNN, torch.nn.LSTM, torch.nn.GRU)
    if not isinstance(module, kinds):
        raise TypeError(
            "module must be a torch.nn.RNN, torch.nn.LSTM or torch.nn.GRU (cells such as "
            f"torch.nn.LSTMCell are not converted); got {type(module).__name__}."
        )
    if getattr(module, "proj_size", 0):
        raise ValueError(
            f"module has proj_size={module.proj_size}: rnnjax has no LSTM projections "
            "(h_t = W_hr (o * tanh(c_t))); convert an LSTM with proj_size=0."
        )
    if module.mode not in _MODES:
        raise ValueError(f"module.mode must be one of {_MODES}; got {module.mode!r}.")
    spec = TorchSpec(
        mode=module.mode,
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(module.num_layers),
        bias=bool(module.bias),
        batch_first=bool(module.batch_first),
        bidirectional=bool(module.bidirectional),
        dropout=float(module.dropout),
    )
    arrays = {name: to_numpy(p) for name, p in module.named_parameters()}
    params = jax.tree_util.tree_map(jnp.asarray, params_from_arrays(spec, arrays))
    return torch_layout(spec), params


_SUPPORTED = (
    "to_torch converts the params of rnnjax.rnn, rnnjax.bidirectional or rnnjax.stack over "
    "simple_rnn, lstm or gru(reset_after=True) cells (torch.nn.RNN/LSTM/GRU); dense layers and "
    "serial models have no such torch module (convert the recurrent part, params[0] of a serial, "
    "and build torch.nn.Linear for the rest)"
)


def _infer_spec(params, batch_first: bool, nonlinearity: str, bias: bool, dropout: float):
    """``(TorchSpec, per-layer params)`` read from the structure of ``params``."""
    single = (RNNParams, LSTMParams, GRUParams, BidirectionalParams)
    layers = (params,) if isinstance(params, single) else params
    if not isinstance(layers, tuple | list) or not layers or hasattr(layers, "_fields"):
        raise TypeError(
            "params must be rnnjax cell params, BidirectionalParams, or a non-empty tuple of them "
            f"(one per layer, as rnnjax.stack makes); got {type(params).__name__}. {_SUPPORTED}."
        )
    for k, layer in enumerate(layers):
        cells = tuple(layer) if isinstance(layer, BidirectionalParams) else (layer,)
        bad = [
            type(c).__name__
            for c in cells
            if type(c) not in _PARAMS_MODE and type(c) is not RNNParams
        ]
        if bad:
            raise TypeError(
                f"params[{k}] must be RNNParams, LSTMParams, GRUParams or BidirectionalParams of "
                f"them; got {type(layer).__name__}"
                + (f" of {bad}" if isinstance(layer, BidirectionalParams) else "")
                + f". {_SUPPORTED}."
            )
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ValueError(f"dropout must be a float in [0, 1); got {dropout!r}.")
    bidirectional = isinstance(layers[0], BidirectionalParams)
    dirs = 2 if bidirectional else 1
    first = layers[0].forward if bidirectional else layers[0]
    kind, hidden = type(first), int(first.w_h.shape[0])
    for k, layer in enumerate(layers):
        cells = tuple(layer) if isinstance(layer, BidirectionalParams) else (layer,)
        if len(cells) != dirs or any(type(c) is not kind for c in cells):
            raise ValueError(
                f"params[{k}] must be {'BidirectionalParams of ' if bidirectional else ''}"
                f"{kind.__name__} like params[0] (torch stacks identical layers); "
                f"got {type(layer).__name__} of {[type(c).__name__ for c in cells]}."
            )
        for c in cells:
            expected_input = int(first.w_x.shape[0]) if k == 0 else dirs * hidden
            if c.w_h.shape[0] != hidden or c.w_x.shape[0] != expected_input:
                raise ValueError(
                    f"params[{k}] must have w_x of shape ({expected_input}, ...) and w_h of "
                    f"shape ({hidden}, ...); got {tuple(c.w_x.shape)} and {tuple(c.w_h.shape)}."
                )
            if kind is GRUParams and c.b_hn is None:
                raise ValueError(
                    f"params[{k}] are GRUParams with b_hn=None (reset_after=False): torch.nn.GRU "
                    "applies the reset gate after the recurrent matmul (reset_after=True) only."
                )
    if kind is RNNParams:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}.")
        mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
    else:
        mode = _PARAMS_MODE[kind]
    spec = TorchSpec(
        mode,
        int(first.w_x.shape[0]),
        hidden,
        len(layers),
        bias,
        batch_first,
        bidirectional,
        float(dropout),
    )
    return spec, tuple(layers)


def to_torch(
    model,
    params,
    *,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    bias: bool | None = None,
    dropout: float | None = None,
):
    """Build the ``torch.nn.RNN`` / ``LSTM`` / ``GRU`` that computes what ``params`` compute.

    The architecture (cell type, layers, directions, sizes, dtype) is read from ``params``. What
    params do not carry comes from the keywords, else from ``model.spec`` when ``model`` came
    from :func:`from_torch`, else the defaults ``batch_first=True`` (rnnjax is batch-major),
    ``nonlinearity="tanh"``, ``bias=True``. rnnjax -> torch -> rnnjax round-trips exactly;
    torch -> rnnjax -> torch gives the same weights and the same function, with ``b_ih + b_hh``
    moved into ``bias_ih``.

    Args:
      model: the rnnjax model ``params`` belong to (a :class:`ConvertedLayer` or any Layer).
      params: one cell's params, ``BidirectionalParams``, or a tuple of them per layer.
      batch_first: torch's ``batch_first``.
      nonlinearity: ``"tanh"`` or ``"relu"`` for ``RNNParams`` (an rnnjax cell's activation
        cannot be read from its params).
      bias: build the module with biases; ``False`` requires every bias in ``params`` to be zero.
      dropout: torch's inter-layer ``dropout`` (the ``dropout=`` given to ``rnnjax.stack``; from
        ``model.spec`` when ``model`` came from :func:`from_torch`, else 0).

    Returns:
      A torch module (float32 or float64 as ``params``) with the converted weights.

    Raises:
      TypeError: ``params`` of a layer torch has no recurrent module for (``dense``,
        ``serial``) or not rnnjax params at all.
      ValueError: params that torch cannot hold (mixed layer types, GRU without ``b_hn``,
        non-zero biases with ``bias=False``, an unknown ``nonlinearity``, a ``dropout`` outside
        ``[0, 1)``).

    >>> import jax
    >>> import rnnjax
    >>> import torch
    >>> model = rnnjax.stack([rnnjax.lstm(16)], return_sequences=True, return_state=True)
    >>> params = model.init(jax.random.key(0), (10, 3))
    >>> module = rnnjax.interop.to_torch(model, params)
    >>> output, (h_n, c_n) = module(torch.ones(4, 10, 3))
    """
    torch = _import_torch()
    spec = spec_of(model, TorchSpec)
    if batch_first is None:
        batch_first = spec.batch_first if spec else True
    if nonlinearity is None:
        nonlinearity = "relu" if spec and spec.mode == "RNN_RELU" else "tanh"
    if bias is None:
        bias = spec.bias if spec else True
    if dropout is None:
        dropout = spec.dropout if spec else 0.0
    spec, layers = _infer_spec(params, bool(batch_first), nonlinearity, bool(bias), dropout)
    arrays = arrays_from_params(spec, layers)
    dtype = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}.get(
        next(iter(arrays.values())).dtype
    )
    if dtype is None:
        raise TypeError(
            f"params must be float32 or float64 for torch; got {next(iter(arrays.values())).dtype}."
        )
    options = dict(
        num_layers=spec.num_layers,
        bias=spec.bias,
        batch_first=spec.batch_first,
        bidirectional=spec.bidirectional,
        dropout=spec.dropout,
        dtype=dtype,
    )
    if spec.mode == "LSTM":
        module = torch.nn.LSTM(spec.input_size, spec.hidden_size, **options)
    elif spec.mode == "GRU":
        module = torch.nn.GRU(spec.input_size, spec.hidden_size, **options)
    else:
        module = torch.nn.RNN(
            spec.input_size, spec.hidden_size, nonlinearity=nonlinearity, **options
        )
    module.load_state_dict({name: torch.from_numpy(a) for name, a in arrays.items()}, strict=True)
    return module.eval()
