"""Batch inference over many variable-length sequences: length-bucketed, jit-compiled, sharded.

The JAX answer to the seed's Java ``EnterpriseSequenceInferenceEngine``: where the Java engine
splits a batch over a thread pool and loops over time, elements and weights by hand (and assumes
every sequence has the length of the first), this engine

* sorts sequences into length buckets (powers of two by default) and pads each to its bucket, so a
  stream of varied lengths compiles once per (batch bucket, length bucket), not once per length;
* runs each bucket as one ``jax.jit``-compiled ``vmap`` of :func:`rnnjax.scan` with per-sequence
  ``length`` (padding never changes a result: the state stops at each sequence's last valid step);
* splits each batch over all local devices (``jax.sharding``) when there are several;
* isolates bad sequences: a sequence with the wrong shape or dtype (bool included), values that
  are not finite in the engine's dtype (NaN, inf, or a float64 value past float32's range) or a
  length beyond the largest bucket gets NaN results, ``ok=False`` and a reason, and the others are
  computed as usual (``strict=True`` raises instead).

Any rnnjax cell works (``simple_rnn``, ``lstm``, ``gru``); weights in the seed's Java layout come in
through :meth:`InferenceEngine.from_seed_rnn` and :meth:`InferenceEngine.from_seed_lstm`.

Beyond batch runs: :func:`rnnjax.export` writes a trained model, params included, as a
``jax.export`` artifact with symbolic batch and time axes, which :func:`rnnjax.load` runs in any
process with JAX, without rnnjax's model code. For online inference, one chunk at a time with the
state kept between calls for one stream or many, use :func:`rnnjax.init_stream`,
:func:`rnnjax.feed` and :func:`rnnjax.reset_streams` (pure and jit-able; feeding chunk by chunk
equals the full run). See the docs' serving guide.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from rnnjax import distributed
from rnnjax._cells import Cell, lstm, simple_rnn
from rnnjax._scan import _check_cell, scan

__all__ = ["EngineStats", "InferenceEngine", "InferenceResult", "power_of_two_bucket"]


class InferenceResult(NamedTuple):
    """What :meth:`InferenceEngine.run` returns, in the order the sequences came in.

    Attributes:
      final_state: the cell's state (``RNNState(h)`` or ``LSTMState(h, c)``) with NumPy leaves
        ``[N, H]``: the state after each sequence's last valid step; the zero initial state for
        length 0; NaN where ``ok`` is False.
      outputs: ``None`` unless ``return_outputs=True``; then a list of ``[length_i, H]`` arrays for
        list input, or ``[N, T, H]`` (zeros past each length, NaN rows where ``ok`` is False) for
        padded input.
      lengths: ``[N]`` valid lengths (0 where ``ok`` is False).
      ok: ``[N]`` bool, False for sequences that were not computed.
      errors: ``N`` entries, ``None`` or the reason a sequence was not computed.
    """

    final_state: Any
    outputs: list[np.ndarray] | np.ndarray | None
    lengths: np.ndarray
    ok: np.ndarray
    errors: tuple[str | None, ...]


class EngineStats(NamedTuple):
    """Counters since the engine was built.

    Attributes:
      compilations: traces of the batched forward pass (one per batch size x length bucket x
        ``return_outputs``); a stream of new lengths within known buckets adds none.
      sequences: sequences computed. batches: device batches run.
      padded_fraction: share of computed time steps that were padding (bucket and batch fill).
    """

    compilations: int
    sequences: int
    batches: int
    padded_fraction: float


def power_of_two_bucket(length: int, minimum: int = 8) -> int:
    """The smallest power of two ``>= max(length, minimum)``: the default length bucket.

    >>> import rnnjax
    >>> rnnjax.inference.power_of_two_bucket(100)
    128
    """
    for name, value in (("length", length), ("minimum", minimum)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}.")
    return max(int(minimum), 1 << max(int(length) - 1, 0).bit_length())


def _as_sequence(
    item, index: int, input_size: int, length, dtype: np.dtype
) -> tuple[np.ndarray | None, str | None]:
    """``(array [L, D] in dtype, None)`` for a usable sequence, else ``(None, reason)``.

    Values are checked for finiteness *after* the cast to the engine's ``dtype``: a float64 1e39
    is finite but overflows float32 to inf, and would otherwise poison the row with NaN states.
    """
    try:
        array = np.asarray(item)
    except ValueError as error:  # ragged nested lists
        return None, f"sequence {index} is not a rectangular [length, {input_size}] array ({error})"
    if array.dtype.kind == "b":
        return None, (
            f"sequence {index} must be real numbers (int or float); got dtype bool. Cast it "
            f"first if 0/1 values are meant, e.g. x.astype(np.float32)."
        )
    if array.dtype.kind not in "iuf" and not jnp.issubdtype(array.dtype, jnp.floating):
        return None, f"sequence {index} must be real numbers; got dtype {array.dtype}"
    if array.ndim != 2 or array.shape[1] != input_size:
        return None, (
            f"sequence {index} must have shape (length, input_size={input_size}); "
            f"got {tuple(array.shape)}"
        )
    valid = array.shape[0] if length is None else int(length)
    if not 0 <= valid <= array.shape[0]:
        return None, f"lengths[{index}]={valid} must lie in [0, {array.shape[0]}]"
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array[:valid].astype(dtype)
    if not np.isfinite(cast).all():
        overflow = np.isfinite(np.asarray(array[:valid], np.float64)).all()
        reason = (
            f"overflow past the largest {dtype} value" if overflow else "NaN or infinite values"
        )
        return None, f"sequence {index} has {reason} in its first {valid} steps"
    return array, None


class InferenceEngine:
    """Length-bucketed, jit-compiled, device-sharded forward passes of one cell's params.

    An engine holds immutable params and a compile cache with counters (its only state), so one
    engine serves a stream of requests without recompiling for lengths it has seen a bucket of.

    Args:
      cell: an rnnjax :class:`Cell` (``simple_rnn``, ``lstm``, ``gru``, or any other cell
        with a ``w_x`` input kernel, such as ``min_gru``).
      params: its params (``cell.init``, ``rnnjax.interop``); their common (promoted) dtype is
        the compute dtype, and inputs (int or float, bfloat16 included) are cast to it.
      length_buckets: increasing bucket lengths; a sequence is padded to the first bucket that
        holds it, and one longer than the last is rejected (``ok=False``). ``None``: powers of two
        from ``min_length_bucket`` up, unbounded.
      min_length_bucket: smallest power-of-two bucket when ``length_buckets`` is None.
      max_batch: most sequences per device batch; batches are padded to a power of two times
        ``len(devices)`` so the number of compiled batch sizes stays small.
      min_batch: fewest rows a batch is padded to (rounded up to a multiple of
        ``len(devices)``): the few long sequences of a long-tailed stream then share one
        compiled batch size instead of compiling for 1, 2, 4, ... rows.
      devices: devices to split each batch over; default all local devices.

    >>> import jax
    >>> import numpy as np
    >>> import rnnjax
    >>> from rnnjax.inference import InferenceEngine
    >>> cell = rnnjax.lstm(64)
    >>> engine = InferenceEngine(cell, cell.init(jax.random.key(0), input_size=8))
    >>> result = engine.run([np.ones((5, 8)), np.ones((300, 8)), np.ones((0, 8))])
    >>> result.final_state.h.shape, engine.stats.compilations
    ((3, 64), 2)
    """

    def __init__(
        self,
        cell: Cell,
        params: Any,
        *,
        length_buckets: Sequence[int] | None = None,
        min_length_bucket: int = 8,
        max_batch: int = 256,
        min_batch: int = 8,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.cell = _check_cell(cell)
        if not hasattr(params, "w_x"):
            raise TypeError(
                f"params must be the params of {cell.name}(hidden_size={cell.hidden_size}) "
                f"(from cell.init or rnnjax.interop); got {type(params).__name__}."
            )
        self.input_size = int(params.w_x.shape[0])
        self.dtype = np.dtype(jnp.result_type(*jax.tree_util.tree_leaves(params)))
        # One probe step checks the params against the cell with the cell's own messages.
        self._state_type = type(cell.initial_state((), self.dtype))
        cell.step(
            params, cell.initial_state((), self.dtype), jnp.zeros(self.input_size, self.dtype)
        )
        if length_buckets is not None:
            length_buckets = tuple(length_buckets)
            if (
                not all(isinstance(b, int | np.integer) for b in length_buckets)
                or not length_buckets
                or any(b < 1 for b in length_buckets)
                or (list(length_buckets) != sorted(set(length_buckets)))
            ):
                raise ValueError(
                    f"length_buckets must be increasing positive ints; got {length_buckets}."
                )
            length_buckets = tuple(int(b) for b in length_buckets)
        if not isinstance(min_length_bucket, int) or min_length_bucket < 1:
            raise ValueError(
                f"min_length_bucket must be a positive int; got {min_length_bucket!r}."
            )
        self.length_buckets = length_buckets
        self.min_length_bucket = min_length_bucket
        devices = list(jax.local_devices() if devices is None else devices)
        if not devices:
            raise ValueError("devices must name at least one device; got none.")
        self.num_devices = len(devices)
        for name, value in (("max_batch", max_batch), ("min_batch", min_batch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        self.max_batch = -(-max_batch // self.num_devices) * self.num_devices
        self.min_batch = min(-(-min_batch // self.num_devices) * self.num_devices, self.max_batch)
        mesh = distributed.make_mesh(devices=devices)
        batch, replicated = NamedSharding(mesh, P(distributed.DATA_AXIS)), NamedSharding(mesh, P())
        self.params = jax.device_put(params, replicated)
        self._compilations = self._sequences = self._batches = 0
        self._real_steps = self._computed_steps = 0
        self._forward = jax.jit(
            self._trace,
            static_argnums=3,
            in_shardings=(replicated, batch, batch),
            out_shardings=batch,
        )

    @classmethod
    def from_seed_rnn(cls, w_x, w_h, bias, **options) -> "InferenceEngine":
        """Engine for the seed's ``forwardVanillaRNNParallel`` weights: ``w_x [H][D]``,
        ``w_h [H][H]``, ``bias [H]`` (tanh), converted by ``rnnjax.interop.from_seed_rnn``."""
        from rnnjax.interop import from_seed_rnn

        params = from_seed_rnn(w_x, w_h, bias)
        return cls(simple_rnn(int(params.w_h.shape[0])), params, **options)

    @classmethod
    def from_seed_lstm(cls, w_gate, b_gate, **options) -> "InferenceEngine":
        """Engine for the seed's ``forwardLSTMParallel`` weights: ``w_gate [4][H][D+H]``,
        ``b_gate [4][H]`` (gates forget, input, candidate, output acting on ``[x_t, h_{t-1}]``),
        converted by ``rnnjax.interop.from_seed_lstm``."""
        from rnnjax.interop import from_seed_lstm

        params = from_seed_lstm(w_gate, b_gate)
        return cls(lstm(int(params.w_h.shape[0])), params, **options)

    @property
    def stats(self) -> EngineStats:
        """Counters since construction (see :class:`EngineStats`)."""
        padded = 1.0 - self._real_steps / self._computed_steps if self._computed_steps else 0.0
        return EngineStats(self._compilations, self._sequences, self._batches, padded)

    def bucket_length(self, length: int) -> int | None:
        """The padded length a sequence of ``length`` runs at; ``None`` if no bucket holds it."""
        if self.length_buckets is None:
            return power_of_two_bucket(length, self.min_length_bucket)
        return next((b for b in self.length_buckets if b >= length), None)

    def _batch_size(self, count: int) -> int:
        per_device = -(-count // self.num_devices)
        size = max(power_of_two_bucket(per_device, 1) * self.num_devices, self.min_batch)
        return min(size, self.max_batch)

    def _trace(self, params, xs, lengths, return_outputs):
        self._compilations += 1  # runs only while tracing: one per compiled shape
        run = jax.vmap(lambda x, length: scan(self.cell, params, x, length=length))
        final_state, ys = run(xs, lengths)
        return (final_state, ys) if return_outputs else (final_state, None)

    def run(
        self, sequences, lengths=None, *, return_outputs: bool = False, strict: bool = False
    ) -> InferenceResult:
        """Final states (and optionally all outputs) of many sequences of different lengths.

        Args:
          sequences: a list of arrays ``[length_i, input_size]`` (NumPy, JAX or nested lists), or a
            padded array ``[N, T, input_size]``. A 2-D array is rejected: without lengths its rows
            cannot be told apart into sequences.
          lengths: optional ``[N]`` ints: the valid prefix of each sequence (default: the whole
            sequence, ``T`` for padded input). Values past it are ignored (may be NaN).
          return_outputs: also return every step's output (see :class:`InferenceResult`).
          strict: raise ``ValueError`` listing the bad sequences instead of marking them.

        A sequence is bad (``ok=False``, NaN results, a reason in ``errors``) when it is not a
        ``[length, input_size]`` array of ints or floats (bool is refused: cast it if 0/1 values
        are meant), when its length passes the largest bucket, or when its valid steps are not
        finite once cast to the engine's dtype (so float64 ``1e39`` is refused by a float32
        engine rather than overflowing to inf inside the scan).

        Returns:
          An :class:`InferenceResult`. An empty batch (``N = 0``) returns empty arrays and compiles
          nothing; a length-0 sequence gets the zero initial state and no outputs.

        Raises:
          TypeError: ``sequences`` is neither a list of arrays nor a 3-D array.
          ValueError: ``lengths`` does not have one int per sequence; with ``strict``, any bad
            sequence.
        """
        items, lengths = self._split(sequences, lengths)
        arrays, errors = [], []
        for index, item in enumerate(items):
            valid = None if lengths is None else lengths[index]
            array, error = _as_sequence(item, index, self.input_size, valid, self.dtype)
            valid = 0 if error else array.shape[0] if lengths is None else int(lengths[index])
            if error is None and self.bucket_length(valid) is None:
                largest = self.length_buckets[-1]
                error = f"sequence {index} has length {valid} > the largest bucket {largest}"
            arrays.append((array, valid))
            errors.append(error)
        if strict and any(errors):
            raise ValueError("bad sequences: " + "; ".join(e for e in errors if e))
        width = None if isinstance(items, list) else items.shape[1]
        return self._compute(arrays, errors, return_outputs, width)

    def _split(self, sequences, lengths):
        """``(items, lengths)``: a list of per-sequence arrays or the padded ``[N, T, D]`` array."""
        if isinstance(sequences, np.ndarray | jax.Array) and sequences.dtype != object:
            if sequences.ndim != 3:
                raise TypeError(
                    f"sequences must be a list of [length, {self.input_size}] arrays or a padded "
                    f"array [N, T, {self.input_size}] (with lengths [N]); got an array of shape "
                    f"{tuple(sequences.shape)}."
                )
            items = np.asarray(sequences)
        elif isinstance(sequences, list | tuple | np.ndarray):
            items = list(sequences)
        else:
            raise TypeError(
                f"sequences must be a list of [length, {self.input_size}] arrays or a padded array "
                f"[N, T, {self.input_size}]; got {type(sequences).__name__}."
            )
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (len(items),):
                raise ValueError(
                    f"lengths must be ints of shape ({len(items)},), one per sequence; got dtype "
                    f"{lengths.dtype} and shape {lengths.shape}."
                )
        return items, lengths

    def _compute(self, arrays, errors, return_outputs, width):
        """Run the good sequences bucket by bucket and scatter results back into input order."""
        count, hidden = len(arrays), self.cell.hidden_size
        # The zero initial state (length-0 sequences keep it), built on the host.
        final = [np.zeros((count, hidden), self.dtype) for _ in self._state_type._fields]
        ok = np.array([e is None for e in errors], dtype=bool)
        for leaf in final:
            leaf[~ok] = np.nan
        lengths = np.array([valid for _, valid in arrays], dtype=np.int64)
        outputs = None
        if return_outputs:
            if width is None:
                outputs = [np.zeros((n, hidden), self.dtype) for n in lengths]
            else:
                outputs = np.zeros((count, width, hidden), self.dtype)
            for index in np.flatnonzero(~ok):
                outputs[index][...] = np.nan
        buckets: dict[int, list[int]] = {}
        for index in np.flatnonzero(ok & (lengths > 0)):
            buckets.setdefault(self.bucket_length(lengths[index]), []).append(int(index))
        pending = []
        for bucket, members in sorted(buckets.items()):
            for start in range(0, len(members), self.max_batch):
                rows = members[start : start + self.max_batch]
                pending.append((rows, self._launch(arrays, rows, bucket, return_outputs)))
        for rows, (batch_state, ys) in pending:
            for leaf, device_leaf in zip(final, batch_state, strict=True):
                leaf[rows] = np.asarray(device_leaf)[: len(rows)]
            if return_outputs:
                ys = np.asarray(ys)
                for row, index in enumerate(rows):
                    outputs[index][: lengths[index]] = ys[row, : lengths[index]]
        final_state = self._state_type(*final)
        return InferenceResult(final_state, outputs, lengths, ok, tuple(errors))

    def _launch(self, arrays, rows, bucket, return_outputs):
        """Pad ``rows`` into one ``[B, bucket, D]`` batch and dispatch it (asynchronously)."""
        size = self._batch_size(len(rows))
        xs = np.zeros((size, bucket, self.input_size), self.dtype)
        lengths = np.zeros((size,), np.int32)
        for row, index in enumerate(rows):
            array, valid = arrays[index]
            xs[row, :valid] = array[:valid]
            lengths[row] = valid
        self._sequences += len(rows)
        self._batches += 1
        self._real_steps += int(lengths.sum())
        self._computed_steps += size * bucket
        return self._forward(self.params, xs, lengths, return_outputs)
