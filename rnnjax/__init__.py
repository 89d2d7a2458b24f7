"""rnnjax: recurrent networks (RNN, LSTM, GRU) as pure JAX functions over parameter pytrees."""

import sys as _sys

if _sys.version_info < (3, 11):  # noqa: UP036 - a checkout on PYTHONPATH skips pip's check
    raise ImportError(
        f"rnnjax needs Python 3.11 or later; this is Python {_sys.version.split()[0]}."
    )

from rnnjax import distributed as distributed
from rnnjax import inference as inference
from rnnjax import interop as interop
from rnnjax import jacobians as jacobians
from rnnjax import train as train
from rnnjax._attention import Attention as Attention
from rnnjax._attention import BahdanauParams as BahdanauParams
from rnnjax._attention import LuongParams as LuongParams
from rnnjax._attention import bahdanau_attention as bahdanau_attention
from rnnjax._attention import luong_attention as luong_attention
from rnnjax._attention import masked_softmax as masked_softmax
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
from rnnjax._export import export as export
from rnnjax._export import load as load
from rnnjax._layers import BidirectionalParams as BidirectionalParams
from rnnjax._layers import DenseParams as DenseParams
from rnnjax._layers import Layer as Layer
from rnnjax._layers import bidirectional as bidirectional
from rnnjax._layers import dense as dense
from rnnjax._layers import rnn as rnn
from rnnjax._layers import serial as serial
from rnnjax._layers import stack as stack
from rnnjax._linear_scan import parallel_linear_scan as parallel_linear_scan
from rnnjax._lru import LRUParams as LRUParams
from rnnjax._lru import LRUState as LRUState
from rnnjax._lru import lru as lru
from rnnjax._minimal import MinGRUParams as MinGRUParams
from rnnjax._minimal import MinLSTMParams as MinLSTMParams
from rnnjax._minimal import min_gru as min_gru
from rnnjax._minimal import min_lstm as min_lstm
from rnnjax._minimal import parallel_minimal_scan as parallel_minimal_scan
from rnnjax._norm_cells import LayerNormGRUParams as LayerNormGRUParams
from rnnjax._norm_cells import LayerNormLSTMParams as LayerNormLSTMParams
from rnnjax._norm_cells import layer_norm_gru as layer_norm_gru
from rnnjax._norm_cells import layer_norm_lstm as layer_norm_lstm
from rnnjax._parallel_auto import parallel_method as parallel_method
from rnnjax._parallel_scan import ConvergenceError as ConvergenceError
from rnnjax._parallel_scan import ParallelScanInfo as ParallelScanInfo
from rnnjax._parallel_scan import parallel_scan as parallel_scan
from rnnjax._rg_lru import RGLRUParams as RGLRUParams
from rnnjax._rg_lru import rg_lru as rg_lru
from rnnjax._scan import scan as scan
from rnnjax._streaming import StreamState as StreamState
from rnnjax._streaming import feed as feed
from rnnjax._streaming import init_stream as init_stream
from rnnjax._streaming import reset_streams as reset_streams

__version__ = "0.2.0"

__all__ = [
    "Attention",
    "bahdanau_attention",
    "BahdanauParams",
    "bidirectional",
    "BidirectionalParams",
    "Cell",
    "ConvergenceError",
    "dense",
    "DenseParams",
    "distributed",
    "export",
    "feed",
    "gru",
    "GRU_GATES",
    "GRUParams",
    "GRUState",
    "inference",
    "init_stream",
    "interop",
    "jacobians",
    "Layer",
    "layer_norm_gru",
    "layer_norm_lstm",
    "LayerNormGRUParams",
    "LayerNormLSTMParams",
    "load",
    "lru",
    "LRUParams",
    "LRUState",
    "lstm",
    "LSTM_GATES",
    "LSTMParams",
    "LSTMState",
    "luong_attention",
    "LuongParams",
    "masked_softmax",
    "min_gru",
    "min_lstm",
    "MinGRUParams",
    "MinLSTMParams",
    "parallel_linear_scan",
    "parallel_method",
    "parallel_minimal_scan",
    "parallel_scan",
    "ParallelScanInfo",
    "reset_streams",
    "rg_lru",
    "RGLRUParams",
    "rnn",
    "RNNParams",
    "RNNState",
    "scan",
    "serial",
    "simple_rnn",
    "stack",
    "StreamState",
    "train",
]
