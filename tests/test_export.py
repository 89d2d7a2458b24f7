"""``rnnjax.export`` / ``load``: every cell and layer exported with symbolic batch and time axes,
serialised, reloaded in a fresh Python process and compared with the model it came from."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._export import export, load
from tests.tolerances import assert_close

D = 3
MODELS = {
    "lstm_cell": lambda: rnnjax.lstm(5),
    "gru_cell": lambda: rnnjax.gru(5),
    "gru_reset_after_cell": lambda: rnnjax.gru(5, reset_after=True),
    "simple_rnn_cell": lambda: rnnjax.simple_rnn(5, jax.nn.relu),
    # The case: rnn(lstm).apply with a symbolic batch ("b, 10, 3") failed to export.
    "rnn_lstm_last": lambda: rnnjax.rnn(rnnjax.lstm(16)),
    "bidirectional_gru": lambda: rnnjax.bidirectional(rnnjax.gru(4), return_sequences=True),
    "stack_lstm_bidirectional": lambda: rnnjax.stack(
        [rnnjax.lstm(4), (rnnjax.gru(3, reset_after=True),) * 2], return_sequences=True
    ),
    "serial_with_dense": lambda: rnnjax.serial(
        rnnjax.rnn(rnnjax.lstm(6)), rnnjax.dense(2, jax.nn.sigmoid)
    ),
    "rnn_with_state": lambda: rnnjax.rnn(rnnjax.lstm(4), return_state=True),
}
SHAPES = [(2, 7), (5, 1), (1, 12)]  # (batch, time): one artifact serves them all


def _init(model):
    key = jax.random.key(0)
    return model.init(key, D) if isinstance(model, rnnjax.Cell) else model.init(key, (4, D))


def _reference(model, params, x, lengths=None):
    layer = rnnjax.rnn(model, return_sequences=True) if isinstance(model, rnnjax.Cell) else model
    return layer.apply(params, x, lengths)


def _inputs(with_lengths):
    rng = np.random.default_rng(0)
    cases = []
    for batch, time in SHAPES:
        x = rng.normal(size=(batch, time, D)).astype(np.float32)
        lengths = rng.integers(0, time + 1, size=batch).astype(np.int32) if with_lengths else None
        cases.append((x, lengths))
    return cases


_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import rnnjax._export as rx
    directory = sys.argv[1]
    names = json.loads(open(directory + "/names.json").read())
    for name in names:
        served = rx.load(f"{directory}/{name}.bin")
        data = np.load(f"{directory}/{name}_in.npz")
        outs = {}
        for i in range(len(data.files) // 2):
            lengths = data[f"lengths{i}"]
            args = (data[f"x{i}"],) + ((lengths,) if lengths.size == data[f"x{i}"].shape[0] else ())
            import jax
            for j, leaf in enumerate(jax.tree_util.tree_leaves(served(*args))):
                outs[f"{i}_{j}"] = np.asarray(leaf)
        np.savez(f"{directory}/{name}_out.npz", **outs)
    """
)


def test_export_reloads_in_a_fresh_process(tmp_path: Path):
    expected = {}
    for name, make in MODELS.items():
        model = make()
        params = _init(model)
        with_lengths = name in ("stack_lstm_bidirectional", "serial_with_dense")
        (tmp_path / f"{name}.bin").write_bytes(export(model, params, D, lengths=with_lengths))
        arrays, outputs = {}, []
        for i, (x, lengths) in enumerate(_inputs(with_lengths)):
            arrays[f"x{i}"] = x
            arrays[f"lengths{i}"] = np.zeros(0, np.int32) if lengths is None else lengths
            outputs.append(jax.tree_util.tree_leaves(_reference(model, params, x, lengths)))
        np.savez(tmp_path / f"{name}_in.npz", **arrays)
        expected[name] = outputs
    (tmp_path / "names.json").write_text(json.dumps(list(MODELS)))
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], check=True, cwd=root, timeout=300)
    for name, outputs in expected.items():
        got = np.load(tmp_path / f"{name}_out.npz")
        for i, leaves in enumerate(outputs):
            for j, leaf in enumerate(leaves):
                assert got[f"{i}_{j}"].shape == leaf.shape, (name, i, j)
                assert_close(got[f"{i}_{j}"], leaf, scale=10.0)


def test_export_shapes_and_fixed_axes():
    model = rnnjax.serial(rnnjax.rnn(rnnjax.gru(4)), rnnjax.dense(1))
    params = _init(model)
    served = load(export(model, params, D))
    assert str(served.exported.in_avals[0].shape) == "(b, t, 3)"
    fixed = load(export(model, params, D, batch_size=2))
    assert str(fixed.exported.in_avals[0].shape) == "(2, t, 3)"
    x = np.ones((2, 6, D), np.float32)
    assert_close(jax.jit(fixed)(x), model.apply(params, x))
    with pytest.raises(Exception, match="[Ss]hape"):
        fixed(np.ones((3, 6, D), np.float32))


def test_load_from_a_path(tmp_path: Path):
    model = rnnjax.rnn(rnnjax.lstm(4), return_sequences=True)
    params = _init(model)
    path = tmp_path / "model.bin"
    path.write_bytes(export(model, params, D, lengths=True))
    served = load(path)
    x = np.random.default_rng(1).normal(size=(3, 5, D)).astype(np.float32)
    lengths = np.array([5, 0, 2], np.int32)
    assert_close(served(x, lengths), model.apply(params, x, jnp.asarray(lengths)))


def test_errors():
    cell = rnnjax.lstm(4)
    params = _init(cell)
    with pytest.raises(TypeError, match="model must be an rnnjax Layer .* or Cell; got dict"):
        export({"cell": cell}, params, D)
    with pytest.raises(ValueError, match="input_size must be a positive int; got 0"):
        export(cell, params, 0)
    with pytest.raises(ValueError, match="batch_size must be a positive int or None .*got -2"):
        export(cell, params, D, batch_size=-2)
    with pytest.raises(TypeError, match="source must be the bytes rnnjax.export returned"):
        load(12)
    served = load(export(cell, params, D))
    with pytest.raises(ValueError, match="exported with lengths=False: do not pass lengths"):
        served(np.ones((1, 2, D), np.float32), np.array([1]))
