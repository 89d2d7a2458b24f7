"""Runnable experiments on rnnjax: ``python -m experiments.<name> [--quick | --full] [--out DIR]``.

Run from a checkout (this package is not installed with rnnjax). Each experiment writes
``results.json`` (numbers, configuration, a machine/version stamp and hashes of its source),
PNG figures and ``summary.md`` under ``experiments/results/<name>/`` of the checkout (or
``--out``), and prints where. The default size finishes in about a minute on 2 CPU cores;
``--quick`` is a smoke-test size that writes to ``results/<name>/quick/`` and ``--full`` the
paper-scale version. Shared command-line and output helpers live in ``experiments._common``;
``python -m experiments.regenerate`` reruns every committed result and re-executes the notebooks.

Experiments on vanishing and exploding gradients:

* ``gradient_decay``: ``||d s_T / d s_k||`` against the lag for RNN (spectral radius sweep), LSTM,
  GRU, LRU and RG-LRU, with fitted per-step decay rates against the analytic ones (Pascanu et
  al.'s bound, the LRU's ``log max|lambda|``, the RG-LRU's gate products).
* ``jacobian_heatmap``: ``||d s_t / d s_k||`` for every pair ``k <= t``, the LRU family included.
* ``bptt_contributions``: the per-step terms of ``dJ_T / dW_hh`` and which steps the gradient hears.
* ``exploding_and_clipping``: Pascanu et al.'s one-unit cliff and gradient-norm clipping.
* ``long_dependencies``: the adding and copy-memory tasks for RNN, LSTM, GRU, min-GRU, LRU and
  RG-LRU.
* ``architecture_tradeoffs``: parameters, time per step and BPTT memory against self-attention.

Parallel in time: ``parallel_in_time`` (DEER and the minimal RNNs' associative scan against the
sequential scan) and ``elk_gain_sweep`` (DEER against ELK on a tanh RNN's gain sweep).
"""

import os

# The experiments call NumPy's LAPACK on many small matrices; on a shared machine OpenBLAS's
# thread pool oversubscribes the cores (a 75 s SVD batch instead of 2 s). Users can override.
for _variable in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
