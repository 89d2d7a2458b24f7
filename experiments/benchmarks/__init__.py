"""rnnjax against PyTorch, Flax, Equinox and cuDNN: ``python -m experiments.benchmarks``.

* ``_timing``: interleaved timing (wall and CPU medians), the machine's GEMM rate, FLOP counts,
  the machine description.
* ``_competitors``: one runner per framework, forward and forward+backward of one layer.
* ``_sweeps``: T, B and H sweeps, the linear-in-T check, peak BPTT memory with and without remat.
* ``_parallel``: parallel-in-time rows (DEER, quasi-DEER, ``parallel_minimal_scan``) against
  ``rnnjax.scan``.
* ``report``: the README section as markdown, ``python -m experiments.benchmarks.report``.
* ``unroll``: the ``unroll`` sweep behind ``rnnjax.scan``'s default,
  ``python -m experiments.benchmarks.unroll``.
* ``profile``: where one forward+backward spends its time, rnnjax's XLA ops beside PyTorch's,
  ``python -m experiments.benchmarks.profile``.
* ``parallel_regimes``: where each parallel-in-time method wins, DEER/ELK (and quasi forms) on a
  tanh RNN at a contracting gain and near the edge of chaos, LRU/RG-LRU by ``scan`` and by
  ``parallel_linear_scan`` against LSTM/GRU, ``python -m experiments.benchmarks.parallel_regimes``
  (markdown in ``_regimes_report``).
"""
