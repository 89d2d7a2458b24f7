"""Batches for :func:`rnnjax.train.fit`: shuffled array batches or a callable's, and
:func:`evaluate` over them."""

from collections.abc import Iterable

import jax
import numpy as np


def num_examples(data) -> int:
    """The common leading (example) size of every array of ``data``."""
    sizes = {np.shape(leaf)[0] for leaf in jax.tree_util.tree_leaves(data)}
    if len(sizes) != 1:
        raise ValueError(
            f"every array of the data must have the same leading (example) axis; got {sizes}."
        )
    return sizes.pop()


def _array_batches(data, batch_size: int, order: np.ndarray, drop_remainder: bool):
    stop = len(order) - len(order) % batch_size if drop_remainder else len(order)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield jax.tree_util.tree_map(lambda x, index=index: np.asarray(x)[index], data)


def batches(data, batch_size, epoch, seed, *, shuffle: bool) -> tuple[Iterable, int | None]:
    """``(iterable of batches, number of batches or None)`` for arrays or a callable.

    Shuffled batches follow ``numpy.random.default_rng((seed, epoch))`` and drop the last
    partial batch (every step has one shape); unshuffled ones keep it.
    """
    if callable(data):
        return data(epoch), None
    if batch_size is None:
        raise ValueError("batch_size is required when the data are arrays.")
    count = num_examples(data)
    if shuffle and count < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {count} training examples.")
    rng = np.random.default_rng((seed, epoch))
    order = rng.permutation(count) if shuffle else np.arange(count)
    num = count // batch_size if shuffle else -(-count // batch_size)
    return _array_batches(data, batch_size, order, drop_remainder=shuffle), num


def batch_size_of(batch) -> int:
    """The leading size of the first array of ``batch``."""
    return int(np.shape(jax.tree_util.tree_leaves(batch)[0])[0])


def evaluate(evaluate_step, params, data, batch_size=None) -> dict[str, float]:
    """Average ``evaluate_step(params, batch)`` metrics over ``data``, weighted by batch size.

    >>> import jax.numpy as jnp, numpy as np, rnnjax
    >>> step = rnnjax.train.make_eval_step(lambda w, batch: {"mean": jnp.mean(batch * w)})
    >>> rnnjax.train.evaluate(step, 2.0, np.arange(5.0), batch_size=2)
    {'mean': 4.0}
    """
    totals: dict[str, float] = {}
    count = 0
    for batch in batches(data, batch_size, 0, 0, shuffle=False)[0]:
        size = batch_size_of(batch)
        for name, value in evaluate_step(params, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value) * size
        count += size
    if count == 0:
        raise ValueError("the evaluation data hold no examples.")
    return {name: total / count for name, total in totals.items()}
