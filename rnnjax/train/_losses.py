"""Losses and metrics that ignore padding: masked by ``mask`` or by per-sequence ``lengths``.

Every function computes a per-element value, zeroes the padded elements (padded inputs are
replaced before the math, so NaN or garbage in padding reaches neither the loss nor its
gradient) and reduces. The default ``"mean"`` divides by the number of valid elements, so a padded
batch gives the loss of the same tokens without padding: the average over real tokens, not over
the ``B * T`` grid.

Values out of their domain (class ids outside ``[0, C)``, binary targets or probabilities outside
``[0, 1]``) at valid positions raise ``ValueError`` when the arrays are concrete (eager calls).
Under ``jit``/``vmap`` they cannot be inspected at trace time: there the loss is NaN at those
positions (so the mean is NaN and the step is loud), and ``check=True`` adds a
``jax.experimental.checkify`` check instead: wrap the jitted function in ``checkify.checkify`` and
call ``err.throw()`` to get the error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import checkify

from rnnjax import _checks

REDUCTIONS = ("mean", "sum", "none")


def sequence_mask(lengths: jax.Array, max_length: int) -> jax.Array:
    """``mask [B, T]``, true at ``t < lengths[b]``.

    >>> import jax.numpy as jnp
    >>> import rnnjax
    >>> rnnjax.train.sequence_mask(jnp.array([2, 0]), 3).tolist()
    [[True, True, False], [False, False, False]]
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 0:
        raise ValueError(f"max_length must be a non-negative int; got {max_length!r}.")
    lengths = jnp.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer) or lengths.ndim != 1:
        raise ValueError(
            f"lengths must be a rank-1 integer array [batch]; got shape {lengths.shape} "
            f"and dtype {lengths.dtype}."
        )
    return jnp.arange(max_length)[None, :] < lengths[:, None]


def _weights(shape: tuple[int, ...], mask, lengths) -> jax.Array | None:
    """The validity mask broadcast to ``shape`` (the per-element loss), or ``None``."""
    if mask is not None and lengths is not None:
        raise ValueError("Pass mask or lengths, not both.")
    if lengths is not None:
        if len(shape) < 2:
            raise ValueError(
                f"lengths needs per-step values of shape (batch, T, ...); got shape {shape}."
            )
        mask = sequence_mask(lengths, shape[1])
        if mask.shape[0] != shape[0]:
            raise ValueError(
                f"lengths must have shape ({shape[0]},) (one per sequence); got {mask.shape[:1]}."
            )
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.shape != shape[: mask.ndim]:
        raise ValueError(
            f"mask must have shape {shape} or a prefix of it; got shape {tuple(mask.shape)}."
        )
    mask = mask.reshape(mask.shape + (1,) * (len(shape) - mask.ndim))
    return jnp.broadcast_to(mask.astype(bool), shape)


def _reduce(values: jax.Array, valid: jax.Array | None, reduction: str) -> jax.Array:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}.")
    if valid is not None:
        values = jnp.where(valid, values, jnp.zeros_like(values))
    if reduction == "none":
        return values
    total = jnp.sum(values)
    if reduction == "sum":
        return total
    count = values.size if valid is None else jnp.sum(valid)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.zeros_like(total))


def _clean(x: jax.Array, valid: jax.Array | None, fill) -> jax.Array:
    """Replace padded entries before the math, so their NaN/inf cannot reach gradients."""
    if valid is None:
        return x
    valid = valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))
    return jnp.where(valid, x, jnp.full_like(x, fill))


def _same_shape(predictions, targets, names=("predictions", "targets")) -> None:
    if jnp.shape(predictions) != jnp.shape(targets):
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape; got {jnp.shape(predictions)} "
            f"and {jnp.shape(targets)} (e.g. a Dense(1) output [B, 1] needs targets [B, 1])."
        )


def _in_domain(values, valid, low, high, name: str, check: bool, *, integer: bool) -> jax.Array:
    """``[...]`` bool: ``values`` (padding already replaced by a valid fill) lie in the domain.

    Raises at once when ``values`` (and ``valid``) are concrete; under tracing adds a checkify
    check when ``check`` is true; the caller turns out-of-domain positions into NaN.
    """
    upper = values < high if integer else values <= high
    inside = (values >= low) & upper
    interval = f"[{low}, {high})" if integer else f"[{low}, {high}]"
    if _checks.is_concrete(values) and (valid is None or _checks.is_concrete(valid)):
        bad = np.argwhere(~np.asarray(inside))
        if bad.size:
            index = tuple(int(i) for i in bad[0])
            raise ValueError(
                f"{name} must lie in {interval}; got {name}{list(index)} = "
                f"{np.asarray(values)[index]} ({len(bad)} value(s) out of range)."
            )
    elif check:
        checkify.check(
            jnp.all(inside),
            f"{name} must lie in {interval}; got values in [{{low}}, {{high}}].",
            low=jnp.min(values),
            high=jnp.max(values),
        )
    return inside


def _nan_outside(values: jax.Array, inside: jax.Array) -> jax.Array:
    return jnp.where(inside, values, jnp.full_like(values, jnp.nan))


def _labels_for(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(logits.dtype, jnp.floating) or logits.ndim < 1:
        raise TypeError(
            f"logits must be a floating-point array [..., num_classes]; got dtype {logits.dtype} "
            f"and shape {tuple(logits.shape)}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class ids; got dtype {labels.dtype}.")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape {logits.shape[:-1]} (logits {logits.shape} without the class "
            f"axis); got {labels.shape}."
        )
    return labels


def softmax_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    mask=None,
    lengths=None,
    reduction: str = "mean",
    check: bool = False,
) -> jax.Array:
    """Cross-entropy of integer ``labels [...]`` under ``softmax(logits [..., C])``.

    Args:
      logits: unnormalised scores ``[..., C]``, e.g. ``[B, T, C]`` for a sequence model.
      labels: integer class ids in ``[0, C)``, shape ``logits.shape[:-1]`` (padded positions
        may hold anything, e.g. -1).
      mask: boolean validity of each label (shape ``labels.shape`` or a prefix of it).
      lengths: ``[B]`` valid steps per sequence (labels ``[B, T, ...]``); excludes ``mask``.
      reduction: ``"mean"`` over valid labels, ``"sum"``, or ``"none"`` (zeros at padding).
      check: under ``jit``, add a ``checkify`` check that valid labels lie in ``[0, C)`` (the
        function must then run inside ``jax.experimental.checkify.checkify``).

    Returns:
      The reduced loss; ``NaN`` at valid positions whose label is out of range when the labels
      are traced (under ``jit`` without ``check``), never a loss of a wrapped-around class.

    Raises:
      TypeError: ``logits`` not floating or ``labels`` not integer.
      ValueError: shapes disagree; concrete valid labels out of ``[0, C)``.

    >>> import jax.numpy as jnp, rnnjax
    >>> logits = jnp.zeros((2, 3, 5))
    >>> loss = rnnjax.train.softmax_cross_entropy(logits, jnp.array([[1, 2, -1], [4, -1, -1]]),
    ...                                           lengths=jnp.array([2, 1]))
    >>> round(float(loss), 4)   # log(5): the -1 padding is ignored
    1.6094
    """
    labels = _labels_for(logits, labels)
    valid = _weights(labels.shape, mask, lengths)
    logits = _clean(logits, valid, 0.0)
    labels = _clean(labels, valid, 0)
    inside = _in_domain(labels, valid, 0, logits.shape[-1], "labels", check, integer=True)
    values = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _reduce(_nan_outside(values, inside), valid, reduction)


def sigmoid_binary_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    *,
    mask=None,
    lengths=None,
    reduction: str = "mean",
    check: bool = False,
) -> jax.Array:
    """Binary cross-entropy of ``targets`` in [0, 1] under ``sigmoid(logits)`` (stable form).

    ``mask``/``lengths``/``reduction``/``check`` as in :func:`softmax_cross_entropy`; shapes must
    match. Targets outside ``[0, 1]`` raise ``ValueError`` when concrete and give NaN when traced.
    """
    _same_shape(logits, targets, ("logits", "targets"))
    valid = _weights(jnp.shape(logits), mask, lengths)
    targets = _clean(targets, valid, 0.0)
    inside = _in_domain(targets, valid, 0, 1, "targets", check, integer=False)
    values = optax.sigmoid_binary_cross_entropy(_clean(logits, valid, 0.0), targets)
    return _reduce(_nan_outside(values, inside), valid, reduction)


def binary_cross_entropy(
    probabilities: jax.Array,
    targets: jax.Array,
    *,
    mask=None,
    lengths=None,
    reduction: str = "mean",
    epsilon: float = 1e-7,
    check: bool = False,
) -> jax.Array:
    """Binary cross-entropy of ``targets`` under predicted ``probabilities`` (a sigmoid output).

    For models ending in ``dense(1, jax.nn.sigmoid)`` as the seed's; probabilities are clipped to
    ``[epsilon, 1 - epsilon]`` (as Keras does). Prefer :func:`sigmoid_binary_cross_entropy` on
    logits when the model can output them. ``probabilities`` or ``targets`` outside ``[0, 1]``
    (a logit passed by mistake) raise ``ValueError`` when concrete and give NaN when traced;
    ``mask``/``lengths``/``reduction``/``check`` as in :func:`softmax_cross_entropy`.
    """
    _same_shape(probabilities, targets, ("probabilities", "targets"))
    if not 0.0 <= epsilon < 0.5:
        raise ValueError(f"epsilon must lie in [0, 0.5); got {epsilon!r}.")
    valid = _weights(jnp.shape(probabilities), mask, lengths)
    p = _clean(probabilities, valid, 0.5)
    y = _clean(targets, valid, 0.0)
    inside = _in_domain(p, valid, 0, 1, "probabilities", check, integer=False)
    inside = inside & _in_domain(y, valid, 0, 1, "targets", check, integer=False)
    p = jnp.clip(p, epsilon, 1.0 - epsilon)
    values = -(y * jnp.log(p) + (1.0 - y) * jnp.log1p(-p))
    return _reduce(_nan_outside(values, inside), valid, reduction)


def mean_squared_error(
    predictions: jax.Array, targets: jax.Array, *, mask=None, lengths=None, reduction: str = "mean"
) -> jax.Array:
    """Squared error ``(predictions - targets)^2``, reduced over valid elements.

    A mask of shape ``[B, T]`` covers all features of ``[B, T, F]`` values.
    """
    _same_shape(predictions, targets)
    valid = _weights(jnp.shape(predictions), mask, lengths)
    error = _clean(predictions, valid, 0.0) - _clean(targets, valid, 0.0)
    return _reduce(jnp.square(error), valid, reduction)


def accuracy(
    logits: jax.Array, labels: jax.Array, *, mask=None, lengths=None, check: bool = False
) -> jax.Array:
    """Fraction of valid positions where ``argmax(logits) == labels``.

    Labels out of ``[0, C)`` are treated as in :func:`softmax_cross_entropy` (an error when
    concrete, NaN when traced, a ``checkify`` check with ``check=True``).
    """
    labels = _labels_for(logits, labels)
    valid = _weights(labels.shape, mask, lengths)
    labels = _clean(labels, valid, 0)
    inside = _in_domain(labels, valid, 0, logits.shape[-1], "labels", check, integer=True)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return _reduce(_nan_outside(correct, inside), valid, "mean")


def binary_accuracy(
    predictions: jax.Array, targets: jax.Array, *, threshold: float = 0.5, mask=None, lengths=None
) -> jax.Array:
    """Fraction of valid positions where ``predictions > threshold`` matches ``targets > 0.5``.

    Use ``threshold=0.5`` for probabilities and ``threshold=0.0`` for logits.
    """
    _same_shape(predictions, targets)
    valid = _weights(jnp.shape(predictions), mask, lengths)
    correct = ((predictions > threshold) == (targets > 0.5)).astype(jnp.float32)
    return _reduce(correct, valid, "mean")
