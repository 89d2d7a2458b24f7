"""What :func:`rnnjax.train.fit` checkpoints after every epoch, and how it resumes from it.

The checkpoint is a dict: the :class:`TrainState`, the best params, the epoch, the seed, the
early-stopping state, the history (as JSON: its length varies) and the global step count that
keys the PRNG. Checkpoints of rnnjax 0.1 (msgpack, without the step count, which then always
equalled ``train_state.step``) still resume.
"""

import json
import logging

from rnnjax.train._checkpoint import checkpoint_steps, restore_checkpoint
from rnnjax.train._errors import CheckpointError
from rnnjax.train._step import TrainState

_log = logging.getLogger("rnnjax.train._fit")


def checkpoint_target(
    state, best_params, epoch, seed, early_stopping, history, global_step=None
) -> dict:
    """The pytree :func:`fit` saves after every epoch (history as JSON: its length varies).

    ``global_step`` (the count of steps taken, which keys the PRNG) is left out of the template
    of checkpoints from rnnjax 0.1, where it was always ``train_state.step``.
    """
    best, best_epoch, waited, stopped = early_stopping
    counter = {} if global_step is None else {"global_step": int(global_step)}
    return {
        **counter,
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


def resume_state(checkpoint_dir, state: TrainState, seed: int) -> dict | None:
    """The newest checkpoint of ``checkpoint_dir`` restored into ``state``'s structure, or None."""
    if not checkpoint_steps(checkpoint_dir):
        _log.info("resume: no checkpoint in %s; starting from epoch 1.", checkpoint_dir)
        return None
    template = checkpoint_target(state, state.params, 0, 0, (0.0, 0, 0, False), [], 0)
    try:  # the train state alone first, so that a mismatch is reported on its leaves
        epoch = restore_checkpoint(checkpoint_dir, {"train_state": state})[1]
        try:
            restored = restore_checkpoint(checkpoint_dir, template, step=epoch)[0]
        except CheckpointError:  # rnnjax 0.1's msgpack checkpoints hold no global_step
            legacy = {name: value for name, value in template.items() if name != "global_step"}
            restored = restore_checkpoint(checkpoint_dir, legacy, step=epoch)[0]
            restored["global_step"] = int(restored["train_state"].step)
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
