"""rnnjax: recurrent networks (RNN, LSTM, GRU) as pure JAX functions over parameter pytrees."""

from rnnjax._cells import GRU_GATES as GRU_GATES
from rnnjax._cells import LSTM_GATES as LSTM_GATES
from rnnjax._cells import Cell as Cell
from rnnjax._cells import GRUParams as GRUParams
from rnnjax._cells import GRUState as GRUState
from rnnjax._cells import LSTMParams as LSTMParams
from rnnjax._cells import LSTMState as LSTMState
from rnnjax._cells import RNNParams as RNNParams
from rnnjax._cells import RNNState as RNNState
from rnnjax._cells import gru as gru
from rnnjax._cells import lstm as lstm
from rnnjax._cells import simple_rnn as simple_rnn
from rnnjax._layers import BidirectionalParams as BidirectionalParams
from rnnjax._layers import DenseParams as DenseParams
from rnnjax._layers import Layer as Layer
from rnnjax._layers import bidirectional as bidirectional
from rnnjax._layers import dense as dense
from rnnjax._layers import rnn as rnn
from rnnjax._layers import serial as serial
from rnnjax._layers import stack as stack
from rnnjax._scan import scan as scan

__version__ = "0.1.0"

__all__ = [
    "BidirectionalParams",
    "Cell",
    "DenseParams",
    "GRUParams",
    "GRUState",
    "GRU_GATES",
    "LSTMParams",
    "LSTMState",
    "LSTM_GATES",
    "Layer",
    "RNNParams",
    "RNNState",
    "bidirectional",
    "dense",
    "gru",
    "lstm",
    "rnn",
    "scan",
    "serial",
    "simple_rnn",
    "stack",
]
