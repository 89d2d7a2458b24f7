"""A jit-compiled training step on optax, reporting the gradient norm before clipping.

The seed's first "common mistake" is training without gradient clipping. Clipping here is plain
optax (``optax.clip_by_global_norm`` / ``optax.clip`` chained before the optimizer, or
:func:`with_clipping`), and every step returns ``grad_norm``, the global norm of the raw gradients
*before* clipping, so an explosion shows in the metrics even while clipping hides it from the
parameters.
"""

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TrainState(NamedTuple):
    """Everything a step updates: ``params``, optax ``opt_state`` and the step count."""

    params: Any
    opt_state: Any
    step: jax.Array

    @classmethod
    def create(cls, params: Any, optimizer: optax.GradientTransformation) -> "TrainState":
        """A state at step 0 with ``optimizer.init(params)``.

        >>> import jax.numpy as jnp, optax, rnnjax
        >>> state = rnnjax.train.TrainState.create({"w": jnp.zeros(3)}, optax.adam(1e-3))
        >>> int(state.step)
        0
        """
        return cls(params, optimizer.init(params), jnp.zeros((), jnp.int32))


def with_clipping(
    optimizer: optax.GradientTransformation,
    *,
    max_norm: float | None = None,
    max_value: float | None = None,
) -> optax.GradientTransformation:
    """``optimizer`` preceded by gradient clipping.

    Args:
      optimizer: any optax transformation, e.g. ``optax.adam(1e-3)``.
      max_norm: rescale all gradients together when their global L2 norm exceeds this
        (``optax.clip_by_global_norm``; Pascanu et al. 2013, the seed's
        ``g = threshold * g / ||g||``).
      max_value: clip each gradient entry to ``[-max_value, max_value]`` (``optax.clip``).

    Returns:
      ``optax.chain(clip..., optimizer)``.

    Raises:
      ValueError: neither or a non-positive threshold is given.

    >>> import optax
    >>> import rnnjax
    >>> optimizer = rnnjax.train.with_clipping(optax.adam(1e-3), max_norm=1.0)
    """
    if max_norm is None and max_value is None:
        raise ValueError("with_clipping needs max_norm or max_value; got neither.")
    clips = []
    for name, value, make in (
        ("max_value", max_value, optax.clip),
        ("max_norm", max_norm, optax.clip_by_global_norm),
    ):
        if value is None:
            continue
        if not value > 0:
            raise ValueError(f"{name} must be positive; got {value!r}.")
        clips.append(make(value))
    return optax.chain(*clips, optimizer)


def _split_loss(output, has_aux: bool):
    if has_aux:
        loss, aux = output
        if not isinstance(aux, dict):
            raise TypeError(
                f"with has_aux=True, loss_fn must return (loss, dict); got {type(aux)}."
            )
        return loss, aux
    return output, {}


def _takes_mask(loss_fn: Callable) -> bool:
    """Whether ``loss_fn`` has an ``example_mask`` parameter (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(loss_fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return False
    return any(p.name == "example_mask" or p.kind == p.VAR_KEYWORD for p in parameters)


def _masked_mean(values: jax.Array, weights: jax.Array) -> jax.Array:
    total = jnp.sum(weights)
    return jnp.sum(weights * values) / jnp.where(total > 0, total, 1)


def _reduce_examples(loss, aux: dict, example_mask, mask_used: bool):
    """A scalar loss (and metrics) from ``loss_fn``'s output, weighting examples by the mask."""
    loss = jnp.asarray(loss)
    if example_mask is not None:
        example_mask = jnp.asarray(example_mask)
        if example_mask.ndim != 1:
            raise ValueError(
                f"example_mask must be a vector [batch]; got shape {example_mask.shape}."
            )
    if loss.ndim == 0:
        if example_mask is not None and not mask_used:
            raise TypeError(
                "the step got an example_mask (e.g. from data_parallel(..., remainder='pad')) but "
                "loss_fn returns a scalar and takes no example_mask: return per-example losses "
                "[batch] (e.g. reduction='none'), which the step averages over the mask, or add "
                "an example_mask=None parameter to loss_fn and weight by it."
            )
        return loss, aux
    if loss.ndim != 1 or (example_mask is not None and loss.shape != example_mask.shape):
        expected = "[batch]" if example_mask is None else f"{example_mask.shape} like example_mask"
        raise ValueError(
            f"loss_fn must return a scalar loss or per-example losses {expected}; got shape "
            f"{loss.shape}."
        )
    weights = jnp.ones(loss.shape, loss.dtype)
    if example_mask is not None:
        weights = example_mask.astype(loss.dtype)
    aux = {
        name: _masked_mean(value, weights.astype(jnp.result_type(value)))
        if jnp.shape(value) == loss.shape
        else value
        for name, value in aux.items()
    }
    return _masked_mean(loss, weights), aux


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
) -> Callable[..., tuple[TrainState, dict]]:
    """Build ``step(state, batch, key, example_mask=None) -> (state, metrics)``: one gradient
    step of ``loss_fn``.

    ``loss_fn`` returns either the batch's scalar loss or per-example losses ``l [B]``; the
    latter are averaged by the step, weighted by ``example_mask`` when one is given:

    .. math:: L = \\sum_b m_b l_b / \\sum_b m_b

    so padded rows (``mask = False``, as ``rnnjax.distributed.data_parallel(...,
    remainder="pad")`` passes) change nothing. Per-example aux metrics ``[B]`` are averaged the
    same way. A ``loss_fn`` with an ``example_mask`` parameter gets the mask itself instead.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (a scalar or ``[B]``), or ``(loss,
        metrics)`` with ``has_aux=True`` where ``metrics`` is a dict of scalars (or ``[B]``).
        ``key`` is a fresh PRNG key per step for dropout; ignore it when the model is
        deterministic.
      optimizer: an optax transformation; put clipping in it (:func:`with_clipping`).
      has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
      jit: compile the step with ``jax.jit`` (turn off to debug, or to wrap it in
        ``data_parallel``).

    Returns:
      ``step``; its metrics are ``loss``, ``grad_norm`` (global L2 norm of the gradients before
      any clipping) and ``loss_fn``'s own metrics.

    Raises:
      TypeError: ``loss_fn`` is not callable or ``optimizer`` is not an optax transformation;
        at trace time, a mask given to a scalar loss that cannot take it.
      ValueError: at trace time, a loss that is neither a scalar nor ``[B]``.

    >>> import jax, jax.numpy as jnp, optax, rnnjax
    >>> def loss_fn(w, batch, key):
    ...     return (batch["x"] @ w - batch["y"]) ** 2        # per example, [B]
    >>> step = rnnjax.train.make_train_step(loss_fn, optax.sgd(0.1))
    >>> state = rnnjax.train.TrainState.create(jnp.zeros(2), optax.sgd(0.1))
    >>> batch = {"x": jnp.ones((3, 2)), "y": jnp.asarray([1.0, 1.0, 100.0])}
    >>> state, metrics = step(state, batch, jax.random.key(0),
    ...                       example_mask=jnp.asarray([True, True, False]))
    >>> float(metrics["loss"])
    1.0
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}."
        )
    takes_mask = _takes_mask(loss_fn)

    def objective(params, batch, key, example_mask):
        mask_used = example_mask is not None and takes_mask
        options = {"example_mask": example_mask} if mask_used else {}
        loss, aux = _split_loss(loss_fn(params, batch, key, **options), has_aux)
        return _reduce_examples(loss, aux, example_mask, mask_used)

    def step(state: TrainState, batch, key, example_mask=None):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
            state.params, batch, key, example_mask
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(params, opt_state, state.step + 1), metrics

    return jax.jit(step) if jit else step


def make_eval_step(
    metric_fn: Callable[[Any, Any], dict], *, jit: bool = True
) -> Callable[[Any, Any], dict]:
    """Compile ``metric_fn(params, batch) -> dict of scalars`` for evaluation (no dropout key).

    >>> import rnnjax
    >>> evaluate = rnnjax.train.make_eval_step(lambda p, b: {"loss": loss(p, b)})
    """
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be callable; got {type(metric_fn).__name__}.")

    def evaluate(params, batch):
        metrics = metric_fn(params, batch)
        if not isinstance(metrics, dict):
            raise TypeError(f"metric_fn must return a dict of scalars; got {type(metrics)}.")
        return metrics

    return jax.jit(evaluate) if jit else evaluate
