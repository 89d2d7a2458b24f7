"""One runner per framework: ``forward()`` and ``forward_backward()`` on the same problem.

Every runner computes the full output sequence ``[B, T, H]`` of one recurrent layer from zeros;
``forward_backward`` differentiates ``sum(outputs)`` with respect to the layer's parameters. GRUs
are the reset-after form everywhere (PyTorch, cuDNN, Flax and Equinox all use it). Builders
return ``None`` when a framework has no such cell (Equinox has no vanilla RNN cell; cuDNN through
``jax.experimental.rnn`` only LSTM).
"""

import time
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import rnnjax
from experiments.benchmarks import _timing

CPU_FRAMEWORKS = ("rnnjax", "rnnjax_plain", "torch", "flax", "equinox")
GPU_FRAMEWORKS = ("rnnjax", "torch_cudnn", "flax", "jax_cudnn")


class Runner(NamedTuple):
    """Zero-argument callables that block until done, and compile time in seconds (or None)."""

    forward: Callable[[], object]
    forward_backward: Callable[[], object]
    compile_s: dict


def time_runners(runners: dict[str, Runner], rounds: int) -> dict[tuple[str, str], dict]:
    """Every runner's forward and forward+backward, interleaved (``_timing.interleaved``):
    ``{(name, "forward" | "forward_backward"): stats}``."""
    calls = {
        (name, mode): getattr(runner, mode)
        for name, runner in runners.items()
        for mode in ("forward", "forward_backward")
    }
    return _timing.interleaved(calls, rounds)


def _compiled(function, *args):
    """AOT-compile ``jax.jit(function)`` and return ``(call, seconds)``."""
    start = time.perf_counter()
    compiled = jax.jit(function).lower(*args).compile()
    seconds = time.perf_counter() - start
    return (lambda: jax.block_until_ready(compiled(*args))), seconds


def _jax_runner(apply, params, x) -> Runner:
    def loss(params, x):
        return jnp.sum(apply(params, x))

    forward, forward_s = _compiled(apply, params, x)
    forward_backward, backward_s = _compiled(jax.grad(loss), params, x)
    return Runner(forward, forward_backward, {"forward": forward_s, "forward_backward": backward_s})


def rnnjax_cell(cell: str, hidden: int, *, plain: bool = False) -> rnnjax.Cell:
    """The rnnjax cell as a user builds it (``"gru"`` is the reset-after GRU, PyTorch's form;
    ``"gru_seed"`` ``rnnjax.gru``'s default); ``plain`` wraps ``recur`` so ``rnnjax.scan`` takes
    the step-by-step autodiff path instead of ``rnnjax._fast`` (the ablation of the fast path)."""
    if cell == "gru":
        core = rnnjax.gru(hidden, reset_after=True)
    elif cell == "gru_seed":
        core = rnnjax.gru(hidden)
    else:
        core = getattr(rnnjax, cell)(hidden)
    if plain:
        recur = core.recur
        core = core._replace(recur=lambda params, state, projected: recur(params, state, projected))
    return core


def rnnjax_runner(cell, x, hidden, *, plain=False, remat=False, unroll=None) -> Runner:
    """``rnnjax.rnn(cell, return_sequences=True)`` applied to the batch, jitted (``cell``: a
    name of ``rnnjax_cell``)."""
    core = rnnjax_cell(cell, hidden, plain=plain)
    layer = rnnjax.rnn(core, return_sequences=True, remat=remat, unroll=unroll)
    params = layer.init(jax.random.key(0), x.shape[1:])
    return _jax_runner(layer.apply, params, jnp.asarray(x))


def flax_runner(cell, x, hidden) -> Runner:
    import flax.linen as nn

    cells = {"lstm": nn.OptimizedLSTMCell, "gru": nn.GRUCell, "simple_rnn": nn.SimpleCell}
    layer = nn.RNN(cells[cell](hidden))
    x = jnp.asarray(x)
    params = layer.init(jax.random.key(0), x)
    return _jax_runner(layer.apply, params, x)


def equinox_runner(cell, x, hidden) -> Runner | None:
    import equinox as eqx

    if cell not in ("lstm", "gru"):
        return None
    module = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[cell]
    core = module(x.shape[-1], hidden, key=jax.random.key(0))
    params, static = eqx.partition(core, eqx.is_array)
    zeros = jnp.zeros((hidden,), jnp.float32)
    initial = (zeros, zeros) if cell == "lstm" else zeros

    def apply(params, x):
        step_cell = eqx.combine(params, static)

        def one(xs):
            def step(state, x_t):
                state = step_cell(x_t, state)
                return state, state[0] if cell == "lstm" else state

            return lax.scan(step, initial, xs)[1]

        return jax.vmap(one)(x)

    return _jax_runner(apply, params, jnp.asarray(x))


def torch_runner(cell, x, hidden, *, device="cpu") -> Runner:
    """``torch.nn.LSTM/GRU/RNN`` (oneDNN on CPU, cuDNN on GPU), batch-first."""
    import torch

    modules = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "simple_rnn": torch.nn.RNN}
    target = "cuda" if device == "gpu" else "cpu"
    module = modules[cell](x.shape[-1], hidden, batch_first=True).to(target)
    inputs = torch.from_numpy(np.array(x)).to(target)

    def sync():
        if target == "cuda":
            torch.cuda.synchronize()

    def forward():
        with torch.no_grad():
            module(inputs)
        sync()

    def forward_backward():
        module.zero_grad(set_to_none=True)
        outputs, _ = module(inputs)
        outputs.sum().backward()
        sync()

    start = time.perf_counter()
    forward_backward()
    first = time.perf_counter() - start
    return Runner(forward, forward_backward, {"forward": None, "forward_backward": first})


def jax_cudnn_runner(cell, x, hidden) -> Runner | None:
    """cuDNN's LSTM through ``jax.experimental.rnn`` (GPU only; it has no GRU or vanilla RNN)."""
    from jax.experimental import rnn as cudnn_rnn

    if cell != "lstm":
        return None
    batch, _, inputs = x.shape
    weights = cudnn_rnn.init_lstm_weight(jax.random.key(0), inputs, hidden, 1, False)
    zeros = jnp.zeros((1, batch, hidden), jnp.float32)
    lengths = jnp.full((batch,), x.shape[1], jnp.int32)
    lstm = partial(
        cudnn_rnn.lstm, input_size=inputs, hidden_size=hidden, num_layers=1, dropout=0.0,
        bidirectional=False,
    )  # fmt: skip

    def apply(weights, x):
        return lstm(x, zeros, zeros, weights, lengths)[0]

    return _jax_runner(apply, weights, jnp.asarray(x))


def build(framework: str, cell: str, x: np.ndarray, hidden: int, device: str) -> Runner | None:
    """The runner of ``framework`` for ``cell`` on input ``x [B, T, D]`` (None if it has none)."""
    if framework == "rnnjax":
        return rnnjax_runner(cell, x, hidden)
    if framework == "rnnjax_plain":
        return rnnjax_runner(cell, x, hidden, plain=True)
    if framework == "flax":
        return flax_runner(cell, x, hidden)
    if framework == "equinox":
        return equinox_runner(cell, x, hidden)
    if framework in ("torch", "torch_cudnn"):
        return torch_runner(cell, x, hidden, device=device)
    if framework == "jax_cudnn":
        return jax_cudnn_runner(cell, x, hidden)
    raise ValueError(
        f"framework must be one of {CPU_FRAMEWORKS + GPU_FRAMEWORKS}; got {framework!r}."
    )
