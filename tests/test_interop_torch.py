"""rnnjax.interop against live torch.nn.RNN / LSTM / GRU: forward, lengths, gradients, round trips."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import rnnjax
from rnnjax import interop
from rnnjax.interop import _torch
from tests.tolerances import assert_close

# (mode, num_layers, bidirectional, bias, batch_first): every option appears both ways.
CONFIGS = [
    ("RNN_TANH", 1, False, True, True),
    ("RNN_RELU", 2, True, False, False),
    ("LSTM", 1, False, True, False),
    ("LSTM", 2, True, True, True),
    ("LSTM", 1, True, False, True),
    ("GRU", 1, False, True, True),
    ("GRU", 2, True, True, False),
    ("GRU", 2, False, False, True),
]


def _module(mode, num_layers, bidirectional, bias, batch_first, input_size, hidden, seed, dtype):
    torch.manual_seed(seed)
    options = dict(
        num_layers=num_layers, bidirectional=bidirectional, bias=bias,
        batch_first=batch_first, dtype=dtype,
    )  # fmt: skip
    if mode.startswith("RNN"):
        return torch.nn.RNN(input_size, hidden, nonlinearity=mode[4:].lower(), **options)
    return getattr(torch.nn, mode)(input_size, hidden, **options)


def _case(config, seed, dtype=torch.float32):
    """A random module, input and initial state for ``config``."""
    rng = np.random.default_rng(seed)
    batch, steps, input_size, hidden = (
        int(v) for v in rng.integers(1, [5, 7, 5, 6], endpoint=True)
    )
    module = _module(*config, input_size, hidden, seed, dtype)
    layout = (batch, steps) if config[4] else (steps, batch)
    x = torch.from_numpy(rng.normal(size=(*layout, input_size))).to(dtype)
    dirs = 2 if config[2] else 1
    h0 = torch.from_numpy(rng.normal(size=(config[1] * dirs, batch, hidden))).to(dtype)
    state0 = (
        (h0, torch.from_numpy(rng.normal(size=h0.shape)).to(dtype)) if config[0] == "LSTM" else h0
    )
    lengths = rng.integers(1, steps, size=batch, endpoint=True)
    return module, x, state0, lengths


def _np(tree):
    return jax.tree_util.tree_map(lambda t: t.detach().numpy(), tree)


def _jnp(tree):
    return jax.tree_util.tree_map(lambda t: jnp.asarray(t.detach().numpy()), tree)


def _assert_tree_close(actual, expected, dtype, scale=1.0):
    assert jax.tree_util.tree_structure(actual) == jax.tree_util.tree_structure(expected)
    for a, e in zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected)):
        assert a.shape == e.shape
        assert_close(a, e, dtype, scale)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_forward_and_final_state_match_torch(config):
    module, x, state0, _ = _case(config, seed=CONFIGS.index(config))
    model, params = interop.from_torch(module)
    with torch.no_grad():
        expected = module(x, state0)
    actual = jax.jit(model.apply)(params, _jnp(x), initial_state=_jnp(state0))
    _assert_tree_close(actual, _np(expected), "float32", scale=2.0)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[6]], ids=["rnn", "lstm", "gru"])
def test_float64_matches_torch_double(config, x64):
    module, x, state0, _ = _case(config, seed=7, dtype=torch.float64)
    model, params = interop.from_torch(module)
    assert params[0].forward.w_x.dtype == jnp.float64
    with torch.no_grad():
        expected = module(x, state0)
    actual = jax.jit(model.apply)(params, _jnp(x), initial_state=_jnp(state0))
    _assert_tree_close(actual, _np(expected), "float64", scale=100.0)


def test_bfloat16_module_converts_exactly():
    """``Tensor.numpy`` refuses bfloat16; the weights arrive in bfloat16, bit for bit (the bias,
    ``b_ih + b_hh``, rounded once to bfloat16)."""
    module = torch.nn.LSTM(3, 4, num_layers=2).to(torch.bfloat16)
    _, params = interop.from_torch(module)
    _, expected = interop.from_torch(module.float())  # bfloat16 -> float32 is exact
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.float32(got), np.float32(want.astype(jnp.bfloat16)))


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[6]], ids=["rnn", "lstm", "gru"])
def test_lengths_match_pack_padded_sequence(config):
    module, x, _, lengths = _case(config, seed=11)
    batch_first = config[4]
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False
    )
    with torch.no_grad():
        out, final = module(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(
        out, batch_first=batch_first, total_length=x.shape[1 if batch_first else 0]
    )
    model, params = interop.from_torch(module)
    actual = jax.jit(model.apply)(params, _jnp(x), jnp.asarray(lengths))
    _assert_tree_close(actual, _np((out, final)), "float32", scale=2.0)


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[6]], ids=["rnn", "lstm", "gru"])
def test_gradients_match_torch_autograd(config):
    """d(loss)/d(x) and d(loss)/d(every torch parameter), the latter through the converter."""
    module, x, state0, _ = _case(config, seed=3)
    rng = np.random.default_rng(4)
    x.requires_grad_(True)
    out, final = module(x, state0)
    weights = [torch.from_numpy(rng.normal(size=t.shape)).float() for t in [out, *_flat(final)]]
    loss = sum((t * w).sum() for t, w in zip([out, *_flat(final)], weights, strict=True))
    loss.backward()
    spec = interop.from_torch(module)[0].spec
    model = interop.torch_layout(spec)
    arrays = {name: jnp.asarray(p.detach().numpy()) for name, p in module.named_parameters()}

    def jax_loss(arrays, x):
        out, final = model.apply(
            _torch.params_from_arrays(spec, arrays), x, initial_state=_jnp(state0)
        )
        parts = [out, *jax.tree_util.tree_leaves(final)]
        return sum(jnp.sum(t * jnp.asarray(w.numpy())) for t, w in zip(parts, weights, strict=True))

    grad_arrays, grad_x = jax.jit(jax.grad(jax_loss, argnums=(0, 1)))(arrays, _jnp(x))
    expected = {name: p.grad.numpy() for name, p in module.named_parameters()}
    expected["x"], grad_arrays["x"] = x.grad.numpy(), grad_x
    assert sorted(grad_arrays) == sorted(expected)
    for name, g in expected.items():
        scale = np.abs(g).max()
        np.testing.assert_allclose(grad_arrays[name], g, rtol=1e-4, atol=1e-4 * scale, err_msg=name)


def _flat(final):
    return list(final) if isinstance(final, tuple) else [final]


def test_unbatched_input_matches_torch():
    module, x, state0, _ = _case(CONFIGS[3], seed=5)
    model, params = interop.from_torch(module)
    x1, state1 = x[0], tuple(s[:, 0] for s in state0)
    with torch.no_grad():
        expected = module(x1, state1)
    actual = jax.jit(model.apply)(params, _jnp(x1), initial_state=_jnp(state1))
    _assert_tree_close(actual, _np(expected), "float32", scale=2.0)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(map(str, c)))
def test_round_trips(config):
    module, x, state0, _ = _case(config, seed=13)
    model, params = interop.from_torch(module)
    back = interop.to_torch(model, params)
    again = interop.from_torch(back)[1]
    chex_equal = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), params, again)
    assert all(jax.tree_util.tree_leaves(chex_equal)), "rnnjax -> torch -> rnnjax must be exact"
    for name, p in module.named_parameters():
        if name.startswith("weight"):
            np.testing.assert_array_equal(dict(back.named_parameters())[name].detach(), p.detach())
    assert (back.batch_first, back.bias, back.mode) == (
        module.batch_first,
        module.bias,
        module.mode,
    )
    with torch.no_grad():
        _assert_tree_close(_np(back(x, state0)), _np(module(x, state0)), "float32", scale=2.0)


def _gru_params(rng, input_size, hidden):
    """Random GRUParams (reset_after=True) drawn in NumPy, to skip rnnjax's eager init."""
    shapes = [(input_size, 3 * hidden), (hidden, 3 * hidden), (3 * hidden,), (hidden,)]
    return rnnjax.GRUParams(*(jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes))


def test_to_torch_from_a_hand_built_stack():
    rng = np.random.default_rng(0)
    gru = rnnjax.gru(4, reset_after=True)
    model = rnnjax.stack([(gru, gru), (gru, gru)], return_sequences=True)
    params = tuple(
        rnnjax.BidirectionalParams(_gru_params(rng, d, 4), _gru_params(rng, d, 4)) for d in (3, 8)
    )
    module = interop.to_torch(model, params)
    assert (module.num_layers, module.bidirectional, module.batch_first) == (2, True, True)
    x = rng.normal(size=(2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        expected, _ = module(torch.from_numpy(x))
    assert_close(jax.jit(model.apply)(params, jnp.asarray(x)), expected.numpy(), scale=2.0)
    mixed = (params[0], _gru_params(rng, 8, 4))
    with pytest.raises(ValueError, match="params\\[1\\] must be BidirectionalParams of GRUParams"):
        interop.to_torch(None, mixed)


def test_errors():
    with pytest.raises(ValueError, match="proj_size=2: rnnjax has no LSTM projections"):
        interop.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError, match="module must be a torch.nn.RNN.*got LSTMCell"):
        interop.from_torch(torch.nn.LSTMCell(3, 4))
    model, params = interop.from_torch(torch.nn.LSTM(3, 4, num_layers=2))
    with pytest.raises(
        ValueError, match=r"initial_state h_0 must have shape \(2, 5, 4\).*got \(1, 5, 4\)"
    ):
        jax.jit(model.apply)(params, jnp.ones((6, 5, 3)), initial_state=(jnp.zeros((1, 5, 4)),) * 2)
    # One array where torch's LSTM takes the pair (h_0, c_0); a tuple of one.
    with pytest.raises(
        ValueError, match=r"the pair \(h_0, c_0\), each of shape \(2, 5, 4\).*got .* \(2, 5, 4\)"
    ):
        model.apply(params, jnp.ones((6, 5, 3)), initial_state=jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=r"the pair \(h_0, c_0\).*got a tuple of length 1"):
        model.apply(params, jnp.ones((6, 5, 3)), initial_state=(jnp.zeros((2, 5, 4)),))
    with pytest.raises(
        ValueError, match=r"x must have shape \(T, B, input_size\).*got shape \(5,\)"
    ):
        jax.jit(model.apply)(params, jnp.ones((5,)))
    gru_params = _gru_params(np.random.default_rng(0), 3, 4)._replace(b_hn=None)
    with pytest.raises(ValueError, match="b_hn=None \\(reset_after=False\\)"):
        interop.to_torch(rnnjax.rnn(rnnjax.gru(4)), gru_params)
    rnn_params = rnnjax.RNNParams(jnp.ones((3, 4)), jnp.ones((4, 4)), jnp.zeros(4))
    with pytest.raises(ValueError, match="nonlinearity must be 'tanh' or 'relu'; got 'gelu'"):
        interop.to_torch(None, rnn_params, nonlinearity="gelu")
    rnn_params = rnn_params._replace(b=rnn_params.b + 1.0)
    with pytest.raises(ValueError, match="b is non-zero .* the target has no bias"):
        interop.to_torch(None, rnn_params, bias=False)
    with pytest.raises(TypeError, match="params must be rnnjax cell params"):
        interop.to_torch(None, {"w": 1})


def test_to_torch_rejects_layers_torch_has_no_recurrent_module_for():
    dense = rnnjax.dense(2)
    with pytest.raises(
        TypeError, match="params must be .*got DenseParams.*dense layers and serial"
    ):
        interop.to_torch(dense, dense.init(jax.random.key(0), (3,)))
    model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(4)), rnnjax.dense(1))
    params = model.init(jax.random.key(0), (5, 3))
    with pytest.raises(TypeError, match=r"params\[1\] must be RNNParams, .*got DenseParams"):
        interop.to_torch(model, params)
    wrapped = (rnnjax.BidirectionalParams(params[0], params[1]),)
    with pytest.raises(
        TypeError, match=r"params\[0\] .*got BidirectionalParams of \['DenseParams'"
    ):
        interop.to_torch(None, wrapped)
    module = interop.to_torch(model, params[0])
    assert isinstance(module, torch.nn.LSTM) and module.hidden_size == 4
    with pytest.raises(TypeError, match="module must be a torch.nn.RNN.*got Linear"):
        interop.from_torch(torch.nn.Linear(3, 4))
