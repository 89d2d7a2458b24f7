"""Truncated backpropagation through time (Williams & Peng 1990; TBPTT(k, k)).

A long sequence ``[B, T, ...]`` is cut into chunks of ``k`` steps. The recurrent state flows from
one chunk to the next, so the forward pass is the full-sequence forward pass; gradients stop at
chunk boundaries (``lax.stop_gradient`` on the carried state), so memory is ``O(k)`` instead of
``O(T)``. Where an example's sequence ends and a new one starts (a stream of concatenated
episodes), a per-example ``reset`` mask puts that example's state back to the initial state
before the chunk, as Haiku's ``ResetCore`` does per step.

Every function here takes a loss over one chunk that exposes the state:
``loss_fn(params, state, chunk, key) -> (loss, new_state)``, for instance::

    layer = rnnjax.rnn(rnnjax.lstm(H), return_sequences=True, return_state=True)
    def loss_fn(params, state, chunk, key):
        (x, y) = chunk
        ys, state = layer.apply(params[0], x, initial_state=state)
        return mean_squared_error(head.apply(params[1], ys), y, reduction="sum"), state
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from rnnjax.train._step import TrainState


def time_chunks(tree: Any, chunk_length: int, *, axis: int = 1) -> Any:
    """Cut every array of ``tree`` along ``axis`` (time) into chunks, stacked on a new axis 0.

    Args:
      tree: arrays ``[B, T, ...]`` (any pytree, e.g. ``(inputs, targets)``).
      chunk_length: ``k``; must divide ``T``.
      axis: the time axis (negative counts from the end, as in NumPy).

    Returns:
      The same pytree with arrays ``[T // k, B, k, ...]``.

    Raises:
      ValueError: ``k`` is not positive or does not divide ``T``, or an array has no ``axis``.

    >>> import jax.numpy as jnp, rnnjax
    >>> x, y = jnp.zeros((4, 1000, 3)), jnp.zeros((4, 1000))
    >>> chunks = rnnjax.train.time_chunks((x, y), 50)
    >>> chunks[0].shape, chunks[1].shape
    ((20, 4, 50, 3), (20, 4, 50))
    """
    if not isinstance(chunk_length, int) or chunk_length < 1:
        raise ValueError(f"chunk_length must be a positive int; got {chunk_length!r}.")

    def cut(x):
        if not -x.ndim <= axis < x.ndim:
            raise ValueError(
                f"axis={axis} is out of range for an array of shape {tuple(x.shape)} in tree."
            )
        time = axis % x.ndim
        length = x.shape[time]
        if length % chunk_length:
            raise ValueError(
                f"chunk_length={chunk_length} must divide the time axis {axis} of length "
                f"{length} (array shape {tuple(x.shape)}); pad or trim the sequence first."
            )
        num = length // chunk_length
        shape = x.shape[:time] + (num, chunk_length) + x.shape[time + 1 :]
        return jnp.moveaxis(jnp.reshape(x, shape), time, 0)

    return jax.tree_util.tree_map(cut, tree)


def reset_state(state: Any, initial_state: Any, reset: jax.Array | None) -> Any:
    """Per example, replace ``state`` by ``initial_state`` where ``reset [B]`` is true.

    Both states have leaves ``[B, ...]``; ``reset=None`` returns ``state``.
    """
    if reset is None:
        return state
    reset = jnp.asarray(reset)
    if reset.dtype != jnp.bool_ or reset.ndim != 1:
        raise ValueError(
            f"reset must be a boolean array [batch]; got shape {reset.shape}, dtype {reset.dtype}."
        )

    def choose(init, current):
        if jnp.shape(current)[:1] != reset.shape:
            raise ValueError(
                f"reset has shape {reset.shape} but a state leaf has shape "
                f"{jnp.shape(current)}; both need the batch axis first."
            )
        where = reset.reshape(reset.shape + (1,) * (jnp.ndim(current) - 1))
        return jnp.where(jnp.broadcast_to(where, jnp.shape(current)), init, current)

    return jax.tree_util.tree_map(choose, initial_state, state)


def tbptt_loss(
    loss_fn: Callable[..., tuple[jax.Array, Any]],
    params: Any,
    initial_state: Any,
    chunks: Any,
    *,
    resets: jax.Array | None = None,
    key=None,
) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """Sum of chunk losses with the state carried across chunks and cut from the gradient.

    Its value equals the full-sequence loss (when ``loss_fn`` sums over steps); ``jax.grad`` of
    it is the truncated gradient: the sum over chunks of each chunk's gradient with its incoming
    state held constant.

    Args:
      loss_fn: ``loss_fn(params, state, chunk, key) -> (loss, new_state)``.
      params: model parameters.
      initial_state: the state before the first chunk, leaves ``[B, ...]``; also the state that
        ``resets`` restore.
      chunks: a pytree with leading chunk axis ``[N, ...]`` (:func:`time_chunks`).
      resets: optional ``[N, B]`` booleans: reset example ``b`` before chunk ``n``.
      key: PRNG key folded with the chunk index for ``loss_fn``; ``None`` passes ``None``.

    Returns:
      ``(total_loss, (chunk_losses [N], final_state))``.

    >>> import jax, jax.numpy as jnp, rnnjax
    >>> layer = rnnjax.rnn(rnnjax.gru(4), return_sequences=True, return_state=True)
    >>> def loss_fn(params, state, chunk, key):
    ...     ys, state = layer.apply(params, chunk, initial_state=state)
    ...     return jnp.sum(ys**2), state
    >>> params = layer.init(jax.random.key(0), (None, 2))
    >>> state0 = rnnjax.gru(4).initial_state(batch_shape=(3,))
    >>> chunks = rnnjax.train.time_chunks(jnp.ones((3, 20, 2)), 5)   # [4, 3, 5, 2]
    >>> grads, (losses, state) = jax.grad(rnnjax.train.tbptt_loss, argnums=1, has_aux=True)(
    ...     loss_fn, params, state0, chunks)
    >>> losses.shape
    (4,)
    """
    num = jax.tree_util.tree_leaves(chunks)[0].shape[0]
    batch = jax.tree_util.tree_leaves(initial_state)[0].shape[0]
    resets = jnp.zeros((num, batch), bool) if resets is None else jnp.asarray(resets)
    if resets.shape != (num, batch):
        raise ValueError(
            f"resets must have shape ({num}, {batch}) [chunks, batch]; got {resets.shape}."
        )
    keys = None if key is None else jax.random.split(key, num)

    def body(state, inputs):
        chunk, reset, key_n = inputs
        state = reset_state(state, initial_state, reset)
        loss, new_state = loss_fn(
            params, jax.tree_util.tree_map(lax.stop_gradient, state), chunk, key_n
        )
        return new_state, loss

    final_state, losses = lax.scan(body, initial_state, (chunks, resets, keys))
    return jnp.sum(losses), (losses, final_state)


def make_tbptt_step(
    loss_fn: Callable[..., tuple[jax.Array, Any]],
    optimizer: optax.GradientTransformation,
    initial_state: Any,
    *,
    jit: bool = True,
) -> Callable[..., tuple[TrainState, Any, dict]]:
    """Build ``step(train_state, state, chunk, key=None, reset=None) -> (train_state, state,
    metrics)``: one optimizer update on one chunk, the state carried to the next call.

    Before the chunk, examples with ``reset[b]`` restart from ``initial_state``; the incoming
    state is a constant for the gradient (``lax.stop_gradient``). Metrics: ``loss`` and
    ``grad_norm`` (before clipping), as :func:`make_train_step`.

    >>> import jax, jax.numpy as jnp, optax, rnnjax
    >>> layer = rnnjax.rnn(rnnjax.gru(4), return_sequences=True, return_state=True)
    >>> def loss_fn(params, state, chunk, key):
    ...     ys, state = layer.apply(params, chunk, initial_state=state)
    ...     return jnp.mean(ys**2), state
    >>> params = layer.init(jax.random.key(0), (None, 2))
    >>> state0 = rnnjax.gru(4).initial_state(batch_shape=(3,))
    >>> step = rnnjax.train.make_tbptt_step(loss_fn, optax.adam(1e-2), state0)
    >>> train_state = rnnjax.train.TrainState.create(params, optax.adam(1e-2))
    >>> train_state, state, metrics = step(train_state, state0, jnp.ones((3, 5, 2)))
    >>> sorted(metrics)
    ['grad_norm', 'loss']
    """

    def step(train_state: TrainState, state, chunk, key=None, reset=None):
        state = jax.tree_util.tree_map(lax.stop_gradient, reset_state(state, initial_state, reset))

        def objective(params):
            return loss_fn(params, state, chunk, key)

        (loss, new_state), grads = jax.value_and_grad(objective, has_aux=True)(train_state.params)
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = optax.apply_updates(train_state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, opt_state, train_state.step + 1), new_state, metrics

    return jax.jit(step) if jit else step


def run_tbptt(
    step: Callable[..., tuple[TrainState, Any, dict]],
    train_state: TrainState,
    state: Any,
    chunks: Any,
    *,
    key=None,
    resets: jax.Array | None = None,
) -> tuple[TrainState, Any, dict[str, np.ndarray]]:
    """Apply ``step`` (:func:`make_tbptt_step`) to each chunk in order.

    Args:
      step: the compiled chunk step.
      train_state: params and optimizer state.
      state: recurrent state before the first chunk.
      chunks: pytree with leading chunk axis ``[N, ...]``.
      key: PRNG key split over the chunks (``None`` for deterministic models).
      resets: optional ``[N, B]`` booleans, passed chunk by chunk.

    Returns:
      ``(train_state, state, metrics)`` with every metric stacked over chunks ``[N]``.
    """
    num = jax.tree_util.tree_leaves(chunks)[0].shape[0]
    keys = [None] * num if key is None else list(jax.random.split(key, num))
    history: dict[str, list] = {}
    for n in range(num):
        chunk = jax.tree_util.tree_map(lambda x, n=n: x[n], chunks)
        reset = None if resets is None else resets[n]
        train_state, state, metrics = step(train_state, state, chunk, keys[n], reset)
        for name, value in metrics.items():
            history.setdefault(name, []).append(value)
    return train_state, state, {name: np.asarray(values) for name, values in history.items()}


def tbptt_train_step(
    chunk_step: Callable[..., tuple[TrainState, Any, dict]],
    initial_state: Any,
    chunk_length: int,
    *,
    axis: int = 1,
) -> Callable[[TrainState, Any, Any], tuple[TrainState, dict]]:
    """A whole-sequence step ``step(train_state, batch, key) -> (train_state, metrics)`` made of
    truncated-BPTT chunk updates, for :func:`fit`'s ``step=``.

    Each batch ``[B, T, ...]`` is cut into ``T // chunk_length`` chunks (:func:`time_chunks`),
    and ``chunk_step`` (:func:`make_tbptt_step`) updates the params once per chunk, the
    recurrent state carried from ``initial_state`` across the batch's chunks. The metrics are
    the means over chunks. ``train_state.step`` counts chunk updates.

    Args:
      chunk_step: ``step(train_state, state, chunk, key, reset) -> (train_state, state,
        metrics)``.
      initial_state: the recurrent state before each batch, leaves ``[B, ...]``.
      chunk_length: ``k``; must divide ``T``.
      axis: the time axis of the batch's arrays.

    Returns:
      ``step``.

    Raises:
      ValueError: ``chunk_length`` is not a positive int (at call time, if it does not divide
        ``T``).

    >>> import jax, jax.numpy as jnp, optax, rnnjax
    >>> layer = rnnjax.rnn(rnnjax.gru(4), return_sequences=True, return_state=True)
    >>> def loss_fn(params, state, chunk, key):
    ...     ys, state = layer.apply(params, chunk[0], initial_state=state)
    ...     return jnp.mean((ys[..., 0] - chunk[1]) ** 2), state
    >>> params = layer.init(jax.random.key(0), (None, 2))
    >>> state0 = rnnjax.gru(4).initial_state(batch_shape=(3,))
    >>> chunk_step = rnnjax.train.make_tbptt_step(loss_fn, optax.adam(1e-2), state0)
    >>> step = rnnjax.train.tbptt_train_step(chunk_step, state0, chunk_length=5)
    >>> batch = (jnp.ones((3, 20, 2)), jnp.zeros((3, 20)))
    >>> state, metrics = step(rnnjax.train.TrainState.create(params, optax.adam(1e-2)), batch,
    ...                       jax.random.key(1))
    >>> int(state.step)
    4
    """
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
        raise ValueError(f"chunk_length must be a positive int; got {chunk_length!r}.")
    if not callable(chunk_step):
        raise TypeError(f"chunk_step must be callable; got {type(chunk_step).__name__}.")

    def step(train_state: TrainState, batch, key):
        chunks = time_chunks(batch, chunk_length, axis=axis)
        train_state, _, metrics = run_tbptt(chunk_step, train_state, initial_state, chunks, key=key)
        return train_state, {name: values.mean() for name, values in metrics.items()}

    return step
