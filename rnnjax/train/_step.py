"""A jit-compiled training step on optax, reporting the gradient norm before clipping.

The seed's first "common mistake" is training without gradient clipping. Clipping here is plain
optax (``optax.clip_by_global_norm`` / ``optax.clip`` chained before the optimizer, or
:func:`with_clipping`), and every step returns ``grad_norm``, the global norm of the raw gradients
*before* clipping, so an explosion shows in the metrics even while clipping hides it from the
parameters.
"""

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

        >>> state = rnnjax.train.TrainState.create(params, optax.adam(1e-3))
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


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    jit: bool = True,
) -> Callable[[TrainState, Any, jax.Array], tuple[TrainState, dict]]:
    """Build ``step(state, batch, key) -> (state, metrics)``: one gradient step of ``loss_fn``.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (a scalar), or ``(loss, metrics)`` with
        ``has_aux=True`` where ``metrics`` is a dict of scalars. ``key`` is a fresh PRNG key per
        step for dropout; ignore it when the model is deterministic.
      optimizer: an optax transformation; put clipping in it (:func:`with_clipping`).
      has_aux: whether ``loss_fn`` returns ``(loss, metrics)``.
      jit: compile the step with ``jax.jit`` (turn off to debug).

    Returns:
      ``step``; its metrics are ``loss``, ``grad_norm`` (global L2 norm of the gradients before
      any clipping) and ``loss_fn``'s own metrics.

    >>> def loss_fn(params, batch, key):
    ...     x, y = batch
    ...     return rnnjax.train.binary_cross_entropy(model.apply(params, x), y)
    >>> step = rnnjax.train.make_train_step(loss_fn, with_clipping(optax.adam(1e-3), max_norm=1.0))
    >>> state, metrics = step(TrainState.create(params, optimizer), (x, y), jax.random.key(0))
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}."
        )

    def objective(params, batch, key):
        return _split_loss(loss_fn(params, batch, key), has_aux)

    def step(state: TrainState, batch, key):
        (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return TrainState(params, opt_state, state.step + 1), metrics

    return jax.jit(step) if jit else step


def make_eval_step(
    metric_fn: Callable[[Any, Any], dict], *, jit: bool = True
) -> Callable[[Any, Any], dict]:
    """Compile ``metric_fn(params, batch) -> dict of scalars`` for evaluation (no dropout key).

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
