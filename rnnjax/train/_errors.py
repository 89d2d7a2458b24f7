"""Checkpoint errors, and the import of optional packages with a message naming the extra."""

import importlib
from types import ModuleType


class CheckpointError(ValueError):
    """A checkpoint is missing or does not match the target."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint is truncated or damaged (bad header, checksum or data)."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (orbax or flax), or raise an ImportError naming the extra to install.

    >>> from rnnjax.train._errors import require
    >>> require("json", "a doctest").dumps(1)
    '1'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".")[0]
        raise ImportError(
            f"{purpose} needs {package} ({error}); install it with "
            "`pip install 'rnnjax[flax]'` (which brings flax and orbax-checkpoint)."
        ) from error
