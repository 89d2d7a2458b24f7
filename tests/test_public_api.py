"""The flat public API: every name in ``__all__`` exists and the contract names stay put."""

import rnnjax


def test_all_names_resolve():
    missing = [name for name in rnnjax.__all__ if not hasattr(rnnjax, name)]
    assert not missing


def test_contract_names():
    for name in ("lstm", "gru", "simple_rnn", "scan", "rnn", "bidirectional", "stack", "dense"):
        assert name in rnnjax.__all__
    assert rnnjax.LSTMParams._fields == ("w_x", "w_h", "b")
    assert rnnjax.RNNParams._fields == ("w_x", "w_h", "b")
    assert rnnjax.GRUParams._fields == ("w_x", "w_h", "b", "b_hn")
    assert rnnjax.Cell._fields[:3] == ("init", "initial_state", "step")
    assert callable(rnnjax.interop.from_torch) and callable(rnnjax.interop.from_keras)
