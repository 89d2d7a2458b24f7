"""``rnnjax.stack(..., dropout=p)``: inverted dropout between layers (``torch.nn.LSTM(dropout=)``),
active only when ``apply`` gets a key, never after the last layer; carried by the torch converters.

The oracle for the mask: a last layer that copies its input (``simple_rnn`` with identity
activation, ``w_x = I``, ``w_h = 0``, ``b = 0``) shows exactly what reached it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import rnnjax
from rnnjax.interop import from_torch, to_torch
from tests.tolerances import assert_close

H, D, T, B = 6, 3, 9, 40


def _copy_cell():
    return rnnjax.simple_rnn(H, activation=lambda a: a)


def _copy_params():
    return rnnjax.RNNParams(jnp.eye(H), jnp.zeros((H, H)), jnp.zeros(H))


def _models(rate, **options):
    first = rnnjax.lstm(H)
    layer = rnnjax.stack([first, _copy_cell()], dropout=rate, return_sequences=True, **options)
    params = layer.init(jax.random.key(0), (T, D))
    params = (params[0], _copy_params())
    return layer, rnnjax.rnn(first, return_sequences=True), params


def _x():
    return jax.random.normal(jax.random.key(1), (B, T, D))


def test_without_key_is_the_plain_stack():
    layer, _, params = _models(0.5)
    plain = rnnjax.stack([rnnjax.lstm(H), _copy_cell()], return_sequences=True)
    assert_close(layer.apply(params, _x()), plain.apply(params, _x()))


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_with_key_drops_inverted_between_layers_only(rate):
    layer, first, params = _models(rate)
    hidden = np.asarray(first.apply(params[0], _x()))
    out = np.asarray(layer.apply(params, _x(), key=jax.random.key(7)))
    dropped = out == 0
    # Every entry is either dropped or the first layer's output scaled by 1 / (1 - rate): one
    # mask, between the layers; a second mask after the last layer would scale by 1/(1-rate)^2.
    np.testing.assert_allclose(out[~dropped], hidden[~dropped] / (1 - rate), rtol=1e-5, atol=1e-6)
    fraction = dropped.mean()
    sigma = np.sqrt(rate * (1 - rate) / dropped.size)
    assert abs(fraction - rate) < 5 * sigma, (fraction, rate)


def test_same_key_same_mask_other_key_other_mask():
    layer, _, params = _models(0.5)
    a = layer.apply(params, _x(), key=jax.random.key(3))
    np.testing.assert_array_equal(a, layer.apply(params, _x(), key=jax.random.key(3)))
    assert not np.array_equal(a, layer.apply(params, _x(), key=jax.random.key(4)))
    raw = np.asarray(layer.apply(params, _x(), key=jax.random.PRNGKey(3)))
    assert 0.4 < (raw == 0).mean() < 0.6


def test_each_boundary_gets_its_own_mask():
    layer = rnnjax.stack([_copy_cell()] * 3, dropout=0.5, return_sequences=True)
    params = (_copy_params(),) * 3
    x = jnp.ones((B, T, H))
    out = np.asarray(layer.apply(params, x, key=jax.random.key(0)))
    # Two independent masks: kept entries are 1 / 0.5**2 = 4, about a quarter of them.
    assert set(np.unique(out)) <= {0.0, 4.0}
    assert 0.15 < (out == 4.0).mean() < 0.35


def test_padding_stays_zero_and_jit_and_grad_work():
    layer, _, params = _models(0.3)
    lengths = jnp.arange(B) % (T + 1)
    apply = jax.jit(lambda p, key: layer.apply(p, _x(), lengths, key=key))
    out = np.asarray(apply(params, jax.random.key(2)))
    valid = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    assert not out[~valid].any()
    grads = jax.grad(lambda p: apply(p, jax.random.key(2)).sum())(params)
    assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))


def test_last_state_output_has_no_dropout():
    layer = rnnjax.stack([rnnjax.lstm(H), rnnjax.gru(H)], dropout=0.5)
    params = layer.init(jax.random.key(0), (T, D))
    out = layer.apply(params, _x(), key=jax.random.key(5))
    assert np.all(np.asarray(out) != 0)


@pytest.mark.parametrize("rate", [1.0, -0.1, True, "0.5"])
def test_bad_rate(rate):
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got"):
        rnnjax.stack([rnnjax.lstm(H)] * 2, dropout=rate)


def test_bad_key():
    layer, _, params = _models(0.5)
    with pytest.raises(TypeError, match="key must be a PRNG key .* got int"):
        layer.apply(params, _x(), key=3)


def test_from_torch_carries_dropout_and_matches_eval_mode():
    torch.manual_seed(0)
    module = torch.nn.LSTM(D, H, num_layers=2, dropout=0.4, batch_first=True).eval()
    model, params = from_torch(module)
    assert model.spec.dropout == pytest.approx(0.4)
    x = _x()
    with torch.no_grad():
        expected, _ = module(torch.from_numpy(np.array(x)))
    output, _ = model.apply(params, x)
    assert_close(output, expected.numpy())
    trained, _ = model.apply(params, x, key=jax.random.key(0))
    assert not np.allclose(trained, output)
    back = to_torch(model, params)
    assert back.dropout == pytest.approx(0.4)


def test_to_torch_takes_dropout_of_a_hand_built_stack():
    layer = rnnjax.stack([rnnjax.gru(H, reset_after=True)] * 2, dropout=0.25)
    params = layer.init(jax.random.key(0), (T, D))
    assert to_torch(layer, params, dropout=0.25).dropout == pytest.approx(0.25)
    assert to_torch(layer, params).dropout == 0.0
    with pytest.raises(ValueError, match=r"dropout must be a float in \[0, 1\); got 1.5"):
        to_torch(layer, params, dropout=1.5)
