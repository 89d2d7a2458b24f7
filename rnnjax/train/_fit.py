"""``fit``: epochs of train steps with callbacks, metric writers, evaluation, early stopping and
checkpoints.

Deterministic for a given ``seed``: the shuffling order comes from ``numpy.random.default_rng(
(seed, epoch))`` and the PRNG key of step ``n`` is ``fold_in(key(seed), n)``, so two runs with one
seed produce the same parameters bit for bit on the same machine and JAX version.

The whole RNG state is therefore ``(seed, epoch, step)``. With ``checkpoint_dir`` every epoch ends
with one checkpoint (written in the background) holding it together with the train state, the
early-stopping state and the history, so ``resume=True`` continues a killed run exactly where the
last epoch ended.
"""

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from rnnjax.train._batches import batch_size_of, batches
from rnnjax.train._batches import evaluate as evaluate
from rnnjax.train._callbacks import check_callbacks, check_writers
from rnnjax.train._checkpoint import CheckpointManager
from rnnjax.train._fit_checks import check_fit_arguments
from rnnjax.train._fit_state import checkpoint_target, resume_state
from rnnjax.train._step import TrainState, make_eval_step, make_train_step

_log = logging.getLogger(__name__)
_KEPT = 2  # checkpoints kept by fit


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: final parameters (the best epoch's with ``restore_best``).
      opt_state: optimizer state after the last step.
      history: one dict per epoch: ``epoch``, ``train_loss``, ``grad_norm`` (mean pre-clip
        norm), ``grad_norm_max``, ``train_<name>`` for every other metric of the step (a loss's
        ``has_aux`` metrics), ``learning_rate`` (when the optimizer exposes it),
        ``skipped_steps``, ``seconds``, ``compile_seconds``, ``examples_per_second`` and
        ``eval_<metric>``.
      best_epoch: the epoch (from 1) with the best monitored value.
      stopped_early: whether ``patience`` or a callback ended training.
    """

    params: Any
    opt_state: Any
    history: list[dict]
    best_epoch: int
    stopped_early: bool


def _learning_rate(opt_state) -> float | None:
    """The ``learning_rate`` hyperparameter of an ``optax.inject_hyperparams`` state, if any."""
    value = optax.tree_utils.tree_get(  # not the schedule's own state under the same name
        opt_state, "learning_rate", None, filtering=lambda _, value: np.ndim(value) == 0
    )
    return None if value is None or np.size(value) != 1 else float(np.asarray(value))


def _summary(step_metrics: list[dict]) -> dict[str, float]:
    """Per-epoch means of the step metrics (``grad_norm_max`` too), named for the history."""
    record = {}
    for name in step_metrics[0]:
        values = np.asarray(jax.device_get([m[name] for m in step_metrics]), np.float64)
        key = name if name == "grad_norm" else f"train_{name}"
        record[key] = float(values.mean())
        if name == "grad_norm":
            record["grad_norm_max"] = float(values.max())
    return record


class _NoBar:
    """Stands in for a tqdm bar when tqdm is not installed (or the bar is off)."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(iterable, total: int | None, desc: str, enabled: bool):
    """A tqdm progress bar (``tqdm`` is optional: ``rnnjax[experiments]``), or none."""
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            _log.debug("progress=True but tqdm is not installed; no progress bar.")
        else:
            return tqdm(iterable, total=total, desc=desc)
    return _NoBar(iterable)


def _nonfinite_error(loss, epoch, index, global_step) -> FloatingPointError:
    return FloatingPointError(
        f"the loss is {loss} at epoch {epoch}, step {index} of the epoch (global step "
        f"{global_step}); training stopped and the last checkpoint (if any) is the previous "
        "epoch's. Check the data and the learning rate, or pass on_nonfinite='skip' to skip "
        "such steps."
    )


def fit(
    loss_fn: Callable[..., Any] | None,
    params: Any,
    optimizer: optax.GradientTransformation,
    train_data: Any,
    *,
    epochs: int,
    batch_size: int | None = None,
    seed: int = 0,
    has_aux: bool = False,
    step: Callable[..., tuple[TrainState, dict]] | None = None,
    callbacks: list | tuple = (),
    writers: list | tuple = (),
    on_nonfinite: str = "raise",
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
    """Train ``params`` on ``loss_fn`` (or with ``step``) using ``optimizer`` for ``epochs`` epochs.

    Args:
      loss_fn: ``loss_fn(params, batch, key) -> loss`` (or ``(loss, metrics)`` with
        ``has_aux``); see :func:`make_train_step`. ``None`` when ``step`` is given.
      params: initial parameters.
      optimizer: optax transformation, clipping included (:func:`with_clipping`); wrap it in
        ``optax.inject_hyperparams`` to have the learning rate logged.
      train_data: a pytree of arrays with a leading example axis (e.g. ``(x, y)``), shuffled each
        epoch into ``batch_size`` batches (the last partial batch is dropped, so every step has
        one shape); or a callable ``train_data(epoch) -> iterable of batches`` (e.g.
        :func:`bucket_by_length` batches, or time-major data for a truncated-BPTT step).
      epochs: maximum number of epochs (a positive int).
      batch_size: examples per step for array data (a positive int).
      seed: seeds shuffling and the per-step PRNG keys (a non-negative int).
      has_aux: ``loss_fn`` returns ``(loss, metrics)``; each metric's epoch mean reaches the
        history as ``train_<name>``.
      step: any train step ``step(state, batch, key) -> (state, metrics)`` over a
        :class:`TrainState`, with ``loss`` among the metrics: e.g. :func:`make_train_step`'s, a
        ``rnnjax.distributed.data_parallel`` one (``batch_argnums=1``), or a truncated-BPTT
        one (:func:`tbptt_train_step`). Replaces ``loss_fn`` and ``has_aux``.
      callbacks: objects with ``on_step_end(step, metrics, state)`` and/or
        ``on_epoch_end(epoch, record, state)`` (:class:`Callback`); one returning ``True``
        stops training after that step or epoch (``stopped_early``).
      writers: metric writers, ``write(step, record)`` called after every epoch
        (:class:`CSVWriter`, :class:`JSONLWriter`, :class:`TensorBoardWriter`).
      on_nonfinite: a NaN or infinite loss ``"raise"`` s a ``FloatingPointError`` naming the
        epoch and step (the epoch is not checkpointed, so the last checkpoint stays the last
        good one), or is ``"skip"`` ped: the step's update is dropped and counted in the
        history's ``skipped_steps``. Checking waits for each step's loss on the host.
      eval_fn: ``eval_fn(params, batch) -> dict of scalars``, run after every epoch on
        ``eval_data`` (arrays batched by ``batch_size`` keeping the remainder, or a callable).
      eval_data: the evaluation data.
      monitor: history key watched for early stopping and ``best_epoch``; defaults to
        ``"eval_loss"`` with evaluation, else ``"train_loss"``.
      mode: ``"min"`` or ``"max"``: whether a smaller or larger monitored value is better.
      patience: stop after this many epochs without an improvement larger than ``min_delta``.
      min_delta: the smallest change that counts as an improvement (finite, ``>= 0``).
      restore_best: return the best epoch's parameters rather than the last.
      checkpoint_dir: if set, take the directory's writer lock and save a checkpoint there after
        every epoch in the background (orbax; the newest 2 are kept): a dict with
        ``train_state`` (:class:`TrainState`), ``best_params``, ``epoch``, ``seed``, the
        early-stopping state ``best`` (the monitored value, negated for ``mode="max"``),
        ``best_epoch``, ``waited``, ``stopped``, and ``history`` (a JSON string). Read one
        back with :func:`restore_checkpoint` and a template of that structure.
      progress: show a tqdm bar per epoch with loss and examples/s (when tqdm is installed).
      resume: continue the run checkpointed in ``checkpoint_dir``: restore its newest intact
        checkpoint and go on from the next epoch, so that ``fit(epochs=k)`` then
        ``fit(epochs=n, resume=True)`` gives the parameters, optimizer state and history of
        ``fit(epochs=n)`` bit for bit. The ``params`` argument serves as the structure
        template; callable ``train_data`` must yield the same batches for the same epoch.
        With no checkpoint there it starts from epoch 1 (and logs it); a run that had
        finished returns at once. Keep the other arguments as in the first call.

    Every epoch is logged at INFO on the ``rnnjax.train._fit`` logger. ``compile_seconds`` is
    the wall time of this call's first step (compilation included) and that step is left out
    of ``examples_per_second``.

    Returns:
      :class:`FitResult`.

    Raises:
      TypeError, ValueError: a bad argument (the message names it), e.g. ``batch_size=0``.
      FloatingPointError: a non-finite loss with ``on_nonfinite="raise"``.
      CheckpointError: with ``resume``, no checkpoint matches ``params`` / ``optimizer`` (the
        message names the leaf), or every checkpoint file is damaged.
      CheckpointLockError: another live process writes to ``checkpoint_dir``.

    >>> import jax, jax.numpy as jnp, numpy as np, optax, rnnjax
    >>> x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    >>> y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    >>> def loss_fn(w, batch, key):
    ...     return jnp.mean((batch[0] @ w - batch[1]) ** 2)
    >>> result = rnnjax.train.fit(loss_fn, jnp.zeros(3), optax.sgd(0.1), (x, y), epochs=20,
    ...                           batch_size=16, progress=False)
    >>> bool(result.history[-1]["train_loss"] < 1e-3)
    True
    """
    check_fit_arguments(
        loss_fn=loss_fn, step=step, epochs=epochs, batch_size=batch_size, seed=seed, mode=mode,
        patience=patience, min_delta=min_delta, monitor=monitor, eval_fn=eval_fn,
        eval_data=eval_data, checkpoint_dir=checkpoint_dir, resume=resume,
        on_nonfinite=on_nonfinite,
    )  # fmt: skip
    callbacks, writers = check_callbacks(callbacks), check_writers(writers)
    monitor = monitor or ("eval_loss" if eval_fn is not None else "train_loss")
    train_step = step or make_train_step(loss_fn, optimizer, has_aux=has_aux)
    evaluate_step = None if eval_fn is None else make_eval_step(eval_fn)
    state = TrainState.create(params, optimizer)
    manager = None if checkpoint_dir is None else CheckpointManager(checkpoint_dir, keep=_KEPT)
    try:
        restored = resume_state(checkpoint_dir, state, seed) if resume else None
        return _train(
            train_step, state, restored, train_data, epochs=epochs, batch_size=batch_size,
            seed=seed, callbacks=callbacks, writers=writers, on_nonfinite=on_nonfinite,
            evaluate_step=evaluate_step, eval_data=eval_data, monitor=monitor, mode=mode,
            patience=patience, min_delta=min_delta, restore_best=restore_best, manager=manager,
            progress=progress,
        )  # fmt: skip
    finally:
        if manager is not None:
            manager.close()  # waits for the last save: a raised error keeps the last good one


def _train(
    train_step, state, restored, train_data, *, epochs, batch_size, seed, callbacks, writers,
    on_nonfinite, evaluate_step, eval_data, monitor, mode, patience, min_delta, restore_best,
    manager, progress,
) -> FitResult:  # fmt: skip
    root_key = jax.random.key(seed)
    sign = 1.0 if mode == "min" else -1.0
    best, best_params, best_epoch, waited, stopped = np.inf, state.params, 0, 0, False
    global_step = 0  # a Python counter: reading state.step would sync with the device each step
    history: list[dict] = []
    first_epoch = 1
    if restored is not None:
        state, best_params = restored["train_state"], restored["best_params"]
        history, best, best_epoch = restored["history"], restored["best"], restored["best_epoch"]
        waited, stopped = restored["waited"], restored["stopped"]
        global_step, first_epoch = restored["global_step"], restored["epoch"] + 1
        if stopped:
            first_epoch = epochs + 1  # a stopped run stays stopped
    compile_pending = True
    for epoch in range(first_epoch, epochs + 1):
        epoch_batches, total = batches(train_data, batch_size, epoch, seed, shuffle=True)
        step_metrics, skipped, examples, steady_examples = [], 0, 0, 0
        compile_seconds, start = 0.0, time.perf_counter()
        steady_start = start
        bar = _bar(epoch_batches, total, f"epoch {epoch}/{epochs}", progress)
        for index, batch in enumerate(bar, start=1):
            step_start = time.perf_counter()
            key = jax.random.fold_in(root_key, global_step)
            new_state, metrics = train_step(state, batch, key)
            if not isinstance(metrics, dict) or "loss" not in metrics:
                raise ValueError(
                    "the step must return (state, metrics) with a 'loss' among the metrics; got "
                    f"metrics {sorted(metrics) if isinstance(metrics, dict) else metrics!r}."
                )
            loss = np.asarray(jax.device_get(metrics["loss"]))  # waits for the step
            size = batch_size_of(batch)
            examples += size
            if compile_pending:
                compile_pending, steady_start = False, time.perf_counter()
                compile_seconds = steady_start - step_start
            else:
                steady_examples += size
            if not np.all(np.isfinite(loss)):
                if on_nonfinite == "raise":
                    raise _nonfinite_error(loss, epoch, index, global_step + 1)
                skipped += 1
                _log.warning("skipping step %d of epoch %d: the loss is %s.", index, epoch, loss)
                continue
            state, global_step = new_state, global_step + 1
            step_metrics.append(metrics)
            if progress and len(step_metrics) % 10 == 1:
                rate = examples / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{float(loss):.4g}", ex_per_s=f"{rate:.0f}")
            if any([bool(c.on_step_end(global_step, metrics, state)) for c in callbacks
                    if hasattr(c, "on_step_end")]):  # fmt: skip
                stopped = True
                break
        if not step_metrics:
            raise ValueError(
                f"epoch {epoch} produced no training batches"
                + (f" ({skipped} skipped for non-finite losses)." if skipped else ".")
            )
        seconds = time.perf_counter() - start
        steady_seconds = time.perf_counter() - steady_start
        record = {"epoch": epoch, **_summary(step_metrics), "skipped_steps": skipped}
        learning_rate = _learning_rate(state.opt_state)
        if learning_rate is not None:
            record["learning_rate"] = learning_rate
        record.update(
            seconds=seconds,
            compile_seconds=compile_seconds,
            examples_per_second=(steady_examples / steady_seconds)
            if steady_examples
            else examples / max(seconds, 1e-9),
        )
        if evaluate_step is not None:
            scores = evaluate(evaluate_step, state.params, eval_data, batch_size)
            record.update({f"eval_{name}": value for name, value in scores.items()})
        if monitor not in record:
            raise ValueError(f"monitor={monitor!r} is not among the metrics {sorted(record)}.")
        history.append(record)
        bar.close()
        _log.info(
            "epoch %d/%d: %s", epoch, epochs,
            ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"),
        )  # fmt: skip
        value = sign * record[monitor]
        if value < best - min_delta or best_epoch == 0:
            best, best_params, best_epoch, waited = value, state.params, epoch, 0
        else:
            waited += 1
            stopped = stopped or (patience is not None and waited >= patience)
        if any([bool(c.on_epoch_end(epoch, record, state)) for c in callbacks
                if hasattr(c, "on_epoch_end")]):  # fmt: skip
            stopped = True
        for writer in writers:
            writer.write(global_step, record)
        if manager is not None:
            early_stopping = (best, best_epoch, waited, stopped)
            target = checkpoint_target(
                state, best_params, epoch, seed, early_stopping, history, global_step
            )
            manager.save(epoch, target)
        if stopped:
            break

    params_out = best_params if restore_best else state.params
    return FitResult(params_out, state.opt_state, history, best_epoch, stopped)
