"""Pieces shared by the converters: a layer that remembers its source, and array helpers."""

from typing import Any

import jax.numpy as jnp
import numpy as np

from rnnjax._layers import Layer


class ConvertedLayer(Layer):
    """An rnnjax :class:`~rnnjax.Layer` built by a converter, with the source's options in ``spec``.

    It is a ``Layer`` (``init``, ``apply``, ``output_shape``) like any other; ``spec`` records what
    the parameters alone do not say (activation, ``batch_first``, ``return_sequences``, ...), so
    ``to_torch`` / ``to_keras`` can rebuild the same module. ``spec`` is ``None`` on copies made
    by ``_replace``.
    """

    spec: Any = None

    def __new__(cls, init, apply, output_shape, spec: Any = None):
        self = super().__new__(cls, init, apply, output_shape)
        self.spec = spec
        return self


def with_spec(layer: Layer, spec: Any) -> ConvertedLayer:
    """``layer`` as a :class:`ConvertedLayer` carrying ``spec``."""
    return ConvertedLayer(*layer, spec=spec)


def spec_of(model: Any, spec_type: type) -> Any:
    """``model.spec`` when it is a ``spec_type``, else ``None`` (a layer built by hand)."""
    spec = getattr(model, "spec", None)
    return spec if isinstance(spec, spec_type) else None


def to_numpy(x) -> np.ndarray:
    """A NumPy copy of a JAX array, NumPy array or (detached, CPU) torch tensor; a bfloat16
    tensor (which ``Tensor.numpy`` refuses) goes through float32, exactly, back to bfloat16."""
    if hasattr(x, "detach"):
        tensor = x.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            return tensor.float().numpy().astype(jnp.bfloat16)
        return tensor.numpy().copy()
    return np.array(x)


def array_module(*arrays):
    """``numpy`` when every array is a NumPy array, else ``jax.numpy``: conversions of concrete
    weights stay in NumPy (no per-shape compilation), traced ones stay differentiable."""
    return np if all(isinstance(a, np.ndarray) for a in arrays) else jnp


def reorder_gates(w, source: tuple[str, ...], target: tuple[str, ...], negate=()):
    """Permute the gate blocks of ``w [..., G*H]`` from ``source`` order to ``target`` order.

    Blocks named in ``negate`` change sign: that is how the GRU update gate moves between the
    ``h = z h_prev + (1 - z) n`` convention (PyTorch, Keras, Flax) and rnnjax's
    ``h = (1 - z) h_prev + z n``, since ``sigmoid(-a) = 1 - sigmoid(a)``. Negation is exact, so
    conversions round-trip bit for bit.
    """
    xp = array_module(w)
    blocks = dict(zip(source, xp.split(w, len(source), axis=-1), strict=True))
    return xp.concatenate([-blocks[g] if g in negate else blocks[g] for g in target], axis=-1)


def check_zero(array, what: str) -> None:
    """Raise ``ValueError`` unless ``array`` is all zeros (a bias a bias-free target would drop)."""
    values = np.asarray(array)
    if np.any(values != 0):
        raise ValueError(
            f"{what} is non-zero (max |value| {np.max(np.abs(values)):.3g}) but the target has "
            f"no bias; convert with bias enabled or zero it first."
        )
