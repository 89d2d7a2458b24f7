"""Training toolkit on optax: steps with clipping metrics, masked losses, truncated BPTT, dropout
and zoneout, embeddings, preprocessing, checkpoints on orbax (the ``rnnjax[flax]`` extra) and a
``fit`` loop with callbacks and metric writers.

>>> import jax, jax.numpy as jnp, numpy as np, optax, rnnjax
>>> from rnnjax import train
>>> model = rnnjax.serial(rnnjax.rnn(rnnjax.lstm(8)), rnnjax.dense(1, jax.nn.sigmoid))
>>> x = np.random.default_rng(0).normal(size=(64, 10, 1)).astype(np.float32)
>>> y = (x.sum(axis=(1, 2)) > 0).astype(np.float32)[:, None]
>>> loss = lambda params, batch, key: train.binary_cross_entropy(model.apply(params, batch[0]),
...                                                                batch[1])
>>> result = train.fit(loss, model.init(jax.random.key(0), (10, 1)),
...                    train.with_clipping(optax.adam(1e-2), max_norm=1.0), (x, y), epochs=2,
...                    batch_size=32, progress=False)
>>> len(result.history)
2
"""

from rnnjax.train._callbacks import Callback as Callback
from rnnjax.train._callbacks import CSVWriter as CSVWriter
from rnnjax.train._callbacks import JSONLWriter as JSONLWriter
from rnnjax.train._callbacks import TensorBoardWriter as TensorBoardWriter
from rnnjax.train._checkpoint import CheckpointManager as CheckpointManager
from rnnjax.train._checkpoint import checkpoint_path as checkpoint_path
from rnnjax.train._checkpoint import checkpoint_steps as checkpoint_steps
from rnnjax.train._checkpoint import restore_checkpoint as restore_checkpoint
from rnnjax.train._checkpoint import save_checkpoint as save_checkpoint
from rnnjax.train._data import Bucket as Bucket
from rnnjax.train._data import Standardizer as Standardizer
from rnnjax.train._data import bucket_by_length as bucket_by_length
from rnnjax.train._data import fit_standardizer as fit_standardizer
from rnnjax.train._data import pad_sequences as pad_sequences
from rnnjax.train._data import sliding_windows as sliding_windows
from rnnjax.train._data import standardize as standardize
from rnnjax.train._data import unstandardize as unstandardize
from rnnjax.train._dropout import VariationalState as VariationalState
from rnnjax.train._dropout import ZoneoutState as ZoneoutState
from rnnjax.train._dropout import drop_connect as drop_connect
from rnnjax.train._dropout import dropout as dropout
from rnnjax.train._dropout import variational_dropout as variational_dropout
from rnnjax.train._dropout import zoneout as zoneout
from rnnjax.train._embedding import EmbeddingParams as EmbeddingParams
from rnnjax.train._embedding import WordVectors as WordVectors
from rnnjax.train._embedding import embedding as embedding
from rnnjax.train._embedding import embedding_matrix as embedding_matrix
from rnnjax.train._embedding import load_word_vectors as load_word_vectors
from rnnjax.train._errors import CheckpointError as CheckpointError
from rnnjax.train._errors import CorruptCheckpointError as CorruptCheckpointError
from rnnjax.train._fit import FitResult as FitResult
from rnnjax.train._fit import evaluate as evaluate
from rnnjax.train._fit import fit as fit
from rnnjax.train._lock import CheckpointLockError as CheckpointLockError
from rnnjax.train._losses import accuracy as accuracy
from rnnjax.train._losses import binary_accuracy as binary_accuracy
from rnnjax.train._losses import binary_cross_entropy as binary_cross_entropy
from rnnjax.train._losses import mean_squared_error as mean_squared_error
from rnnjax.train._losses import sequence_mask as sequence_mask
from rnnjax.train._losses import sigmoid_binary_cross_entropy as sigmoid_binary_cross_entropy
from rnnjax.train._losses import softmax_cross_entropy as softmax_cross_entropy
from rnnjax.train._step import TrainState as TrainState
from rnnjax.train._step import make_eval_step as make_eval_step
from rnnjax.train._step import make_train_step as make_train_step
from rnnjax.train._step import with_clipping as with_clipping
from rnnjax.train._tbptt import make_tbptt_step as make_tbptt_step
from rnnjax.train._tbptt import reset_state as reset_state
from rnnjax.train._tbptt import run_tbptt as run_tbptt
from rnnjax.train._tbptt import tbptt_loss as tbptt_loss
from rnnjax.train._tbptt import tbptt_train_step as tbptt_train_step
from rnnjax.train._tbptt import time_chunks as time_chunks

__all__ = [
    "Bucket",
    "CSVWriter",
    "Callback",
    "CheckpointError",
    "CheckpointLockError",
    "CheckpointManager",
    "CorruptCheckpointError",
    "EmbeddingParams",
    "FitResult",
    "JSONLWriter",
    "Standardizer",
    "TensorBoardWriter",
    "TrainState",
    "VariationalState",
    "WordVectors",
    "ZoneoutState",
    "accuracy",
    "binary_accuracy",
    "binary_cross_entropy",
    "bucket_by_length",
    "checkpoint_path",
    "checkpoint_steps",
    "drop_connect",
    "dropout",
    "embedding",
    "embedding_matrix",
    "evaluate",
    "fit",
    "fit_standardizer",
    "load_word_vectors",
    "make_eval_step",
    "make_tbptt_step",
    "make_train_step",
    "mean_squared_error",
    "pad_sequences",
    "reset_state",
    "restore_checkpoint",
    "run_tbptt",
    "save_checkpoint",
    "sequence_mask",
    "sigmoid_binary_cross_entropy",
    "sliding_windows",
    "softmax_cross_entropy",
    "standardize",
    "tbptt_loss",
    "tbptt_train_step",
    "time_chunks",
    "unstandardize",
    "variational_dropout",
    "with_clipping",
    "zoneout",
]
