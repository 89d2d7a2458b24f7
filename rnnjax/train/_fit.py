"""``fit``: epochs of jit-compiled steps with a progress bar, evaluation and early stopping.

Deterministic for a given ``seed``: the shuffling order comes from ``numpy.random.default_rng(
(seed, epoch))`` and the dropout key of step ``n`` is ``fold_in(key(seed), n)``, so two runs
with one seed produce the same parameters bit for bit on the same machine and JAX version.

The whole RNG state is therefore ``(seed, epoch, step)``. With ``checkpoint_dir`` every epoch ends
with one atomic checkpoint holding it together with the train state, the early-stopping state and
the history, so ``resume=True`` continues a killed run exactly where the last epoch ended.
"""

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from rnnjax.train._checkpoint import (
    CheckpointError,
    checkpoint_steps,
    restore_checkpoint,
    save_checkpoint,
)
from rnnjax.train._step import TrainState, make_eval_step, make_train_step

_log = logging.getLogger(__name__)


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: final parameters (the best epoch's with ``restore_best``).
      opt_state: optimizer state after the last step.
      history: one dict per epoch: ``epoch``, ``train_loss``, ``grad_norm`` (mean pre-clip
        norm), ``grad_norm_max``, ``seconds``, ``examples_per_second`` and ``eval_<metric>``.
      best_epoch: the epoch (from 1) with the best monitored value.
      stopped_early: whether ``patience`` ended training.
    """

    params: Any
    opt_state: Any
    history: list[dict]
    best_epoch: int
    stopped_early: bool


def _num_examples(data) -> int:
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


def _batches(data, batch_size, epoch, seed, *, shuffle: bool) -> tuple[Iterable, int | None]:
    """``(iterable of batches, number of batches or None)`` for arrays or a callable."""
    if callable(data):
        return data(epoch), None
    if batch_size is None:
        raise ValueError("batch_size is required when the data are arrays.")
    count = _num_examples(data)
    if shuffle and count < batch_size:
        raise ValueError(f"batch_size={batch_size} exceeds the {count} training examples.")
    rng = np.random.default_rng((seed, epoch))
    order = rng.permutation(count) if shuffle else np.arange(count)
    num = count // batch_size if shuffle else -(-count // batch_size)
    return _array_batches(data, batch_size, order, drop_remainder=shuffle), num


def _batch_size(batch) -> int:
    return int(np.shape(jax.tree_util.tree_leaves(batch)[0])[0])


def evaluate(evaluate_step, params, data, batch_size=None) -> dict[str, float]:
    """Average ``evaluate_step(params, batch)`` metrics over ``data``, weighted by batch size."""
    totals: dict[str, float] = {}
    count = 0
    batches, _ = _batches(data, batch_size, 0, 0, shuffle=False)
    for batch in batches:
        size = _batch_size(batch)
        for name, value in evaluate_step(params, batch).items():
            totals[name] = totals.get(name, 0.0) + float(value) * size
        count += size
    if count == 0:
        raise ValueError("the evaluation data hold no examples.")
    return {name: total / count for name, total in totals.items()}


def _checkpoint_target(state, best_params, epoch, seed, early_stopping, history) -> dict:
    """The pytree :func:`fit` saves after every epoch (history as JSON: its length varies)."""
    best, best_epoch, waited, stopped = early_stopping
    return {
        "train_state": state,
        "best_params": best_params,
        "epoch": int(epoch),
        "seed": int(seed),
        "best": float(best),
        "best_epoch": int(best_epoch),
        "waited": int(waited),
        "stopped": bool(stopped),
        "history": json.dumps(history),
    }


def _resume(checkpoint_dir, state: TrainState, seed: int) -> dict | None:
    """The newest checkpoint of ``checkpoint_dir`` restored into ``state``'s structure, or None."""
    if not checkpoint_steps(checkpoint_dir):
        _log.info("resume: no checkpoint in %s; starting from epoch 1.", checkpoint_dir)
        return None
    template = _checkpoint_target(state, state.params, 0, 0, (0.0, 0, 0, False), [])
    try:  # the train state alone first, so that a mismatch is reported on its leaves
        epoch = restore_checkpoint(checkpoint_dir, {"train_state": state})[1]
        restored = restore_checkpoint(checkpoint_dir, template, step=epoch)[0]
    except CheckpointError as error:
        raise CheckpointError(
            f"cannot resume from {checkpoint_dir}: its checkpoint does not match the params and "
            f"optimizer passed to fit: {error}"
        ) from None
    if restored["seed"] != seed:
        raise ValueError(
            f"seed={seed} differs from the seed={restored['seed']} of the run checkpointed in "
            f"{checkpoint_dir}; pass seed={restored['seed']} to continue it, or a new "
            "checkpoint_dir to start another run."
        )
    restored["history"] = json.loads(restored["history"])
    _log.info("resume: continuing after epoch %d from %s.", epoch, checkpoint_dir)
    return restored


def fit(
    loss_fn: Callable[..., Any],
    params: Any,
    optimizer: optax.GradientTransformation,
    train_data: Any,
    *,
    epochs: int,
    batch_size: int | None = None,
    seed: int = 0,
    has_aux: bool = False,
    eval_fn: Callable[[Any, Any], dict] | None = None,
    eval_data: Any = None,
    monitor: str | None = None,
    mode: str = "min",
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    checkpoint_dir: str | None = None,
    progress: bool = True,
    resume: bool = False,
) -> FitResult:
    """Train ``params`` on ``loss_fn`` with ``optimizer`` for ``epochs`` epochs.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (or ``(loss, metrics)`` with
        ``has_aux``); see :func:`make_train_step`.
      params: initial parameters.
      optimizer: optax transformation, clipping included (:func:`with_clipping`).
      train_data: a pytree of arrays with a leading example axis (e.g. ``(x, y)``), shuffled each
        epoch into ``batch_size`` batches (the last partial batch is dropped, so every step has
        one shape); or a callable ``train_data(epoch) -> iterable of batches`` (e.g.
        :func:`bucket_by_length` batches).
      epochs: maximum number of epochs.
      batch_size: examples per step for array data.
      seed: seeds shuffling and the per-step PRNG keys.
      has_aux: ``loss_fn`` returns ``(loss, metrics)``.
      eval_fn: ``eval_fn(params, batch) -> dict of scalars``, run after every epoch on
        ``eval_data`` (arrays batched by ``batch_size`` keeping the remainder, or a callable).
      eval_data: the evaluation data.
      monitor: history key watched for early stopping and ``best_epoch``; defaults to
        ``"eval_loss"`` with evaluation, else ``"train_loss"``.
      mode: ``"min"`` or ``"max"``: whether a smaller or larger monitored value is better.
      patience: stop after this many epochs without an improvement larger than ``min_delta``.
      min_delta: the smallest change that counts as an improvement.
      restore_best: return the best epoch's parameters rather than the last.
      checkpoint_dir: if set, write an atomic checkpoint ``checkpoint_<epoch>.msgpack`` there
        after every epoch (keeping the last 2): a dict with ``train_state`` (:class:`TrainState`),
        ``best_params``, ``epoch``, ``seed``, the early-stopping state ``best`` (the monitored
        value, negated for ``mode="max"``), ``best_epoch``, ``waited``, ``stopped``, and
        ``history`` (a JSON string). Read one back with e.g.
        ``restore_checkpoint(checkpoint_dir, {"train_state": TrainState.create(params, opt)})``.
      progress: show a tqdm bar per epoch with loss, pre-clip grad norm and examples/s.
      resume: continue the run checkpointed in ``checkpoint_dir``: restore its newest intact
        checkpoint (params, optimizer state, step count, early-stopping state, history) and go
        on from the next epoch, so that ``fit(epochs=k)`` then ``fit(epochs=n, resume=True)``
        gives the parameters, optimizer state and history of ``fit(epochs=n)`` bit for bit.
        The ``params`` argument serves as the structure template; shuffling and dropout keys
        follow from ``(seed, epoch, step)``; callable ``train_data`` must yield the same
        batches for the same epoch. With no checkpoint there it starts from epoch 1 (and logs
        it); a run that had finished (``epochs`` reached or stopped early) returns at once.
        Keep the other arguments as in the first call.

    Returns:
      :class:`FitResult`.

    Raises:
      CheckpointError: (a ``ValueError``) with ``resume``, the checkpoint's params or optimizer
        state differ in structure, shape or dtype from ``params`` / ``optimizer`` (the message
        names the leaf), or every checkpoint file is damaged.
      ValueError: a bad argument; ``resume`` without ``checkpoint_dir``; a ``seed`` other than
        the checkpointed run's.

    >>> result = rnnjax.train.fit(loss_fn, params, optimizer, (x, y), epochs=10, batch_size=32,
    ...                           eval_fn=metrics, eval_data=(x_test, y_test), patience=3,
    ...                           checkpoint_dir="runs/a", resume=True)
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int; got {epochs!r}.")
    if (eval_fn is None) != (eval_data is None):
        raise ValueError("eval_fn and eval_data go together; pass both or neither.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir; got checkpoint_dir=None.")
    monitor = monitor or ("eval_loss" if eval_fn is not None else "train_loss")
    step = make_train_step(loss_fn, optimizer, has_aux=has_aux)
    evaluate_step = None if eval_fn is None else make_eval_step(eval_fn)
    state = TrainState.create(params, optimizer)
    root_key = jax.random.key(seed)
    sign = 1.0 if mode == "min" else -1.0
    best, best_params, best_epoch, waited, stopped = np.inf, state.params, 0, 0, False
    global_step = 0  # a Python counter: reading state.step would sync with the device each step
    history: list[dict] = []
    first_epoch = 1
    restored = _resume(checkpoint_dir, state, seed) if resume else None
    if restored is not None:
        state, best_params = restored["train_state"], restored["best_params"]
        history, best, best_epoch = restored["history"], restored["best"], restored["best_epoch"]
        waited, stopped = restored["waited"], restored["stopped"]
        global_step, first_epoch = int(state.step), restored["epoch"] + 1
        if stopped:
            first_epoch = epochs + 1  # an early-stopped run stays stopped

    for epoch in range(first_epoch, epochs + 1):
        batches, total = _batches(train_data, batch_size, epoch, seed, shuffle=True)
        losses, norms, examples, start = [], [], 0, time.perf_counter()
        bar = tqdm(batches, total=total, desc=f"epoch {epoch}/{epochs}", disable=not progress)
        for batch in bar:
            state, metrics = step(state, batch, jax.random.fold_in(root_key, global_step))
            global_step += 1
            losses.append(metrics["loss"])
            norms.append(metrics["grad_norm"])
            examples += _batch_size(batch)
            if progress and len(losses) % 10 == 1:
                rate = examples / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(
                    loss=f"{float(losses[-1]):.4g}", grad_norm=f"{float(norms[-1]):.3g}",
                    ex_per_s=f"{rate:.0f}",
                )  # fmt: skip
        if not losses:
            raise ValueError(f"epoch {epoch} produced no training batches.")
        norms_np = np.asarray(jax.device_get(norms), np.float64)
        seconds = time.perf_counter() - start
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(jax.device_get(losses))),
            "grad_norm": float(norms_np.mean()),
            "grad_norm_max": float(norms_np.max()),
            "seconds": seconds,
            "examples_per_second": examples / max(seconds, 1e-9),
        }
        if evaluate_step is not None:
            scores = evaluate(evaluate_step, state.params, eval_data, batch_size)
            record.update({f"eval_{name}": value for name, value in scores.items()})
        if monitor not in record:
            raise ValueError(f"monitor={monitor!r} is not among the metrics {sorted(record)}.")
        history.append(record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k != "epoch"})
        bar.close()
        _log.info("epoch %d: %s", epoch, record)
        value = sign * record[monitor]
        if value < best - min_delta or best_epoch == 0:
            best, best_params, best_epoch, waited = value, state.params, epoch, 0
        else:
            waited += 1
            stopped = patience is not None and waited >= patience
        if checkpoint_dir is not None:
            early_stopping = (best, best_epoch, waited, stopped)
            target = _checkpoint_target(state, best_params, epoch, seed, early_stopping, history)
            save_checkpoint(checkpoint_dir, target, epoch, keep=2)
        if stopped:
            break

    params_out = best_params if restore_best else state.params
    return FitResult(params_out, state.opt_state, history, best_epoch, stopped)
