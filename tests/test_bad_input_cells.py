"""Bad input to cells and ``rnnjax.scan``: each case raises the named exception, and the message
names the offending argument (issue 23).

Every case is a call a new user could make by mistake; ``match`` holds the argument's name (and,
where the message should say it, the expected or actual value).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import jacobians as J

KEY = jax.random.key(0)
LSTM = rnnjax.lstm(4)
GRU = rnnjax.gru(4)
RNN = rnnjax.simple_rnn(4)
LSTM_PARAMS = LSTM.init(KEY, 3)
GRU_PARAMS = GRU.init(KEY, 3)
RNN_PARAMS = RNN.init(KEY, 3)
XS = jnp.ones((5, 3))


def _scan(**options):
    return rnnjax.scan(LSTM, LSTM_PARAMS, XS, **options)


CASES = [
    # Constructors.
    pytest.param(lambda: rnnjax.lstm(0), ValueError, "hidden_size", id="lstm-hidden-0"),
    pytest.param(lambda: rnnjax.lstm(-3), ValueError, "hidden_size", id="lstm-hidden-negative"),
    pytest.param(
        lambda: rnnjax.lstm(2.5), (TypeError, ValueError), "hidden_size", id="lstm-hidden-float"
    ),
    pytest.param(
        lambda: rnnjax.lstm("4"), (TypeError, ValueError), "hidden_size", id="lstm-hidden-str"
    ),
    pytest.param(
        lambda: rnnjax.lstm(True), (TypeError, ValueError), "hidden_size", id="lstm-hidden-bool"
    ),
    pytest.param(lambda: rnnjax.gru(0), ValueError, "hidden_size", id="gru-hidden-0"),
    pytest.param(
        lambda: rnnjax.gru(None), (TypeError, ValueError), "hidden_size", id="gru-hidden-none"
    ),
    pytest.param(lambda: rnnjax.simple_rnn(0), ValueError, "hidden_size", id="rnn-hidden-0"),
    pytest.param(
        lambda: rnnjax.simple_rnn(4, "tanh"), TypeError, "activation", id="rnn-activation-str"
    ),
    pytest.param(lambda: rnnjax.min_gru(0), ValueError, "hidden_size", id="min-gru-hidden-0"),
    pytest.param(
        lambda: rnnjax.min_lstm(-1), ValueError, "hidden_size", id="min-lstm-hidden-negative"
    ),
    pytest.param(
        lambda: rnnjax.layer_norm_lstm(0), ValueError, "hidden_size", id="ln-lstm-hidden-0"
    ),
    pytest.param(lambda: rnnjax.layer_norm_gru(0), ValueError, "hidden_size", id="ln-gru-hidden-0"),
    pytest.param(
        lambda: rnnjax.lstm(4, param_dtype=jnp.int32),
        TypeError,
        "param_dtype",
        id="lstm-int-param-dtype",
    ),
    # init.
    pytest.param(lambda: LSTM.init(KEY, 0), ValueError, "input_size", id="init-input-0"),
    pytest.param(lambda: LSTM.init(KEY, -2), ValueError, "input_size", id="init-input-negative"),
    pytest.param(
        lambda: LSTM.init(KEY, 2.5), (TypeError, ValueError), "input_size", id="init-input-float"
    ),
    pytest.param(
        lambda: LSTM.init(KEY, (5, 3)), (TypeError, ValueError), "input_size", id="init-input-tuple"
    ),
    pytest.param(lambda: LSTM.init(3, KEY), (TypeError, ValueError), "key", id="init-swapped"),
    pytest.param(lambda: LSTM.init(jnp.ones(3), 3), TypeError, "key", id="init-float-key"),
    # initial_state.
    pytest.param(
        lambda: LSTM.initial_state(-1),
        (TypeError, ValueError),
        "batch_shape",
        id="initial-state-batch-negative",
    ),
    pytest.param(
        lambda: LSTM.initial_state((2, -1)),
        ValueError,
        "batch_shape",
        id="initial-state-batch-tuple-negative",
    ),
    pytest.param(
        lambda: LSTM.initial_state((2.5,)),
        (TypeError, ValueError),
        "batch_shape",
        id="initial-state-batch-float",
    ),
    pytest.param(
        lambda: LSTM.initial_state((), jnp.int32), TypeError, "dtype", id="initial-state-int-dtype"
    ),
    # step.
    pytest.param(
        lambda: LSTM.step(LSTM_PARAMS, LSTM.initial_state(), jnp.ones(4)),
        ValueError,
        "x",
        id="step-wrong-width",
    ),
    pytest.param(
        lambda: LSTM.step(LSTM_PARAMS, LSTM.initial_state(), jnp.ones(3, int)),
        TypeError,
        "x",
        id="step-int-x",
    ),
    pytest.param(
        lambda: LSTM.step(GRU_PARAMS, LSTM.initial_state(), jnp.ones(3)),
        TypeError,
        "params",
        id="step-gru-params-to-lstm",
    ),
    pytest.param(
        lambda: LSTM.step(LSTM_PARAMS, GRU.initial_state(), jnp.ones(3)),
        (TypeError, ValueError),
        "state",
        id="step-gru-state-to-lstm",
    ),
    pytest.param(
        lambda: LSTM.step(LSTM_PARAMS, rnnjax.LSTMState(jnp.ones(5), jnp.ones(5)), jnp.ones(3)),
        ValueError,
        "state",
        id="step-state-wrong-width",
    ),
    pytest.param(
        lambda: LSTM.step(LSTM_PARAMS, LSTM.initial_state(), jnp.ones(3, bool)),
        TypeError,
        "x",
        id="step-bool-x",
    ),
    pytest.param(
        lambda: RNN.step(
            RNN_PARAMS._replace(w_h=jnp.ones((4, 4), jnp.int32)), RNN.initial_state(), jnp.ones(3)
        ),
        TypeError,
        "w_h",
        id="step-int-weights",
    ),
    pytest.param(
        lambda: RNN.step(
            RNN_PARAMS._replace(w_h=jnp.ones((3, 4))), RNN.initial_state(), jnp.ones(3)
        ),
        ValueError,
        "w_h",
        id="step-w-h-wrong-shape",
    ),
    # scan.
    pytest.param(
        lambda: rnnjax.scan("lstm", LSTM_PARAMS, XS), TypeError, "cell", id="scan-cell-str"
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, LSTM_PARAMS, jnp.ones((2, 5, 3))),
        ValueError,
        "xs",
        id="scan-batched-xs",
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, LSTM_PARAMS, jnp.ones(3)), ValueError, "xs", id="scan-rank-1-xs"
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, LSTM_PARAMS, jnp.ones((5, 4))),
        ValueError,
        "xs",
        id="scan-wrong-width",
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, LSTM_PARAMS, jnp.ones((5, 3), jnp.int32)),
        TypeError,
        "xs",
        id="scan-int-xs",
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, LSTM_PARAMS, np.ones((5, 3), bool)),
        TypeError,
        "xs",
        id="scan-bool-xs",
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, GRU_PARAMS, XS), TypeError, "params", id="scan-wrong-params"
    ),
    pytest.param(
        lambda: rnnjax.scan(LSTM, {"w_x": 1}, XS), TypeError, "params", id="scan-dict-params"
    ),
    pytest.param(lambda: _scan(length=6), ValueError, "length", id="scan-length-past-t"),
    pytest.param(lambda: _scan(length=-1), ValueError, "length", id="scan-length-negative"),
    pytest.param(lambda: _scan(length=2.5), TypeError, "length", id="scan-length-float"),
    pytest.param(
        lambda: _scan(length=jnp.array([2, 3])), ValueError, "length", id="scan-length-vector"
    ),
    pytest.param(lambda: _scan(unroll=0), ValueError, "unroll", id="scan-unroll-0"),
    pytest.param(lambda: _scan(unroll=-2), ValueError, "unroll", id="scan-unroll-negative"),
    pytest.param(lambda: _scan(unroll=1.5), ValueError, "unroll", id="scan-unroll-float"),
    pytest.param(lambda: _scan(remat_chunk=0), ValueError, "remat_chunk", id="scan-remat-chunk-0"),
    pytest.param(
        lambda: _scan(initial_state=GRU.initial_state()),
        ValueError,
        "initial_state",
        id="scan-state-wrong-type",
    ),
    pytest.param(
        lambda: _scan(initial_state=LSTM.initial_state((2,))),
        ValueError,
        "initial_state",
        id="scan-batched-state",
    ),
    pytest.param(
        lambda: _scan(initial_state=jnp.zeros(4)),
        ValueError,
        "initial_state",
        id="scan-bare-array-state",
    ),
    pytest.param(lambda: _scan(reverse="yes"), TypeError, "reverse", id="scan-reverse-str"),
    # rnnjax.jacobians (analysis of a cell over one sequence)
    pytest.param(
        lambda: J.state_jacobians(LSTM, LSTM_PARAMS, XS, part="c"),
        ValueError,
        "part",
        id="jacobians-part",
    ),
    pytest.param(
        lambda: J.state_jacobians(LSTM, LSTM_PARAMS, jnp.ones(3)),
        ValueError,
        "xs",
        id="jacobians-xs-rank-1",
    ),
    pytest.param(
        lambda: J.step_jacobians("lstm", LSTM_PARAMS, XS),
        TypeError,
        "cell",
        id="jacobians-cell-str",
    ),
    pytest.param(
        lambda: J.states(LSTM, LSTM_PARAMS, jnp.ones((5, 3), int)),
        TypeError,
        "xs",
        id="jacobians-int-xs",
    ),
    pytest.param(
        lambda: J.rnn_step_jacobians(LSTM_PARAMS, XS),
        TypeError,
        "params",
        id="jacobians-rnn-given-lstm",
    ),
    pytest.param(
        lambda: J.bptt_terms(LSTM, LSTM_PARAMS, XS, jnp.ones(5)),
        ValueError,
        "final_cotangent",
        id="jacobians-cotangent-shape",
    ),
    pytest.param(
        lambda: J.chain_products(jnp.ones((4, 4))), ValueError, "step_jacobians", id="chain-rank-2"
    ),
    pytest.param(
        lambda: J.chain_products(jnp.ones((3, 4, 5))),
        ValueError,
        "step_jacobians",
        id="chain-not-square",
    ),
    pytest.param(
        lambda: J.pairwise_jacobians(jnp.ones((4, 4))),
        ValueError,
        "step_jacobians",
        id="pairwise-rank-2",
    ),
    pytest.param(
        lambda: J.pairwise_jacobian_norms(jnp.ones((3, 4, 4), int)),
        TypeError,
        "step_jacobians",
        id="pairwise-norms-int",
    ),
    pytest.param(
        lambda: J.spectral_norm(jnp.ones(4)), ValueError, "matrices", id="spectral-norm-rank-1"
    ),
    pytest.param(
        lambda: J.decay_rate(jnp.ones(2)), ValueError, "norms_by_lag", id="decay-two-lags"
    ),
    pytest.param(
        lambda: J.decay_rate(jnp.ones(5), floor=-1.0),
        ValueError,
        "floor",
        id="decay-floor-negative",
    ),
    pytest.param(
        lambda: J.pascanu_bound(jnp.ones((3, 4)), jnp.arange(3)),
        ValueError,
        "w_h",
        id="pascanu-not-square",
    ),
    pytest.param(
        lambda: J.pascanu_bound(jnp.eye(4), jnp.arange(3), gamma=0.0),
        ValueError,
        "gamma",
        id="pascanu-gamma-0",
    ),
    pytest.param(
        lambda: J.with_spectral_radius(RNN_PARAMS, -1.0),
        ValueError,
        "rho",
        id="spectral-radius-negative",
    ),
    pytest.param(
        lambda: J.with_spectral_radius(LSTM_PARAMS, 1.0),
        ValueError,
        "w_h",
        id="spectral-radius-gated",
    ),
    pytest.param(
        lambda: J.with_spectral_radius({"w_h": jnp.eye(2)}, 1.0),
        TypeError,
        "params",
        id="spectral-radius-dict",
    ),
    pytest.param(lambda: J.flatten_state("h"), TypeError, "state", id="flatten-state-str"),
]


@pytest.mark.parametrize("call, error, match", CASES)
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_empty_sequence_is_accepted_not_an_error():
    """T = 0 is a valid sequence: the initial state and no outputs (the contract others mirror)."""
    state, ys = rnnjax.scan(LSTM, LSTM_PARAMS, jnp.ones((0, 3)))
    assert ys.shape == (0, 4)
    np.testing.assert_array_equal(state.h, np.zeros(4))


def test_nan_input_propagates_to_outputs():
    """scan does not check values (it runs under jit); NaN in the valid steps shows in the state."""
    xs = XS.at[2, 1].set(jnp.nan)
    state, ys = rnnjax.scan(LSTM, LSTM_PARAMS, xs)
    assert np.isfinite(np.asarray(ys[:2])).all()
    assert np.isnan(np.asarray(ys[2:])).all() and np.isnan(np.asarray(state.h)).all()
