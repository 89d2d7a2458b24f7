"""Move weights between rnnjax and PyTorch, Keras 3, Flax (linen and NNX) and the seed's Java
engine.

Converters return ``(model, params)`` where ``model`` is an rnnjax :class:`~rnnjax.Layer` (a
:class:`ConvertedLayer` that remembers the source's options in ``model.spec``) and ``params``
its parameter pytree. GRU conventions: PyTorch, Keras and Flax update
``h_t = z h_{t-1} + (1 - z) n``, rnnjax (the seed) ``h_t = (1 - z) h_{t-1} + z n``; every converter
negates the update gate's weights and bias, which maps one onto the other exactly.

PyTorch, Keras and Flax are imported only when their converters are called.
"""

from rnnjax.interop._common import ConvertedLayer as ConvertedLayer
from rnnjax.interop._flax import FlaxSpec as FlaxSpec
from rnnjax.interop._flax import from_flax as from_flax
from rnnjax.interop._flax import to_flax as to_flax
from rnnjax.interop._keras import KerasSpec as KerasSpec
from rnnjax.interop._keras import from_keras as from_keras
from rnnjax.interop._keras import to_keras as to_keras
from rnnjax.interop._seed import from_seed_lstm as from_seed_lstm
from rnnjax.interop._seed import from_seed_rnn as from_seed_rnn
from rnnjax.interop._seed import to_seed_lstm as to_seed_lstm
from rnnjax.interop._seed import to_seed_rnn as to_seed_rnn
from rnnjax.interop._torch import TorchSpec as TorchSpec
from rnnjax.interop._torch import from_torch as from_torch
from rnnjax.interop._torch import to_torch as to_torch
from rnnjax.interop._torch import torch_layout as torch_layout

__all__ = [
    "ConvertedLayer",
    "FlaxSpec",
    "KerasSpec",
    "TorchSpec",
    "from_flax",
    "from_keras",
    "from_seed_lstm",
    "from_seed_rnn",
    "from_torch",
    "to_flax",
    "to_keras",
    "to_seed_lstm",
    "to_seed_rnn",
    "to_torch",
    "torch_layout",
]
