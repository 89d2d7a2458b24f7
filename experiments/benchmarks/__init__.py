"""rnnjax against PyTorch, Flax, Equinox and cuDNN: ``python -m experiments.benchmarks``.

* ``_timing``: interleaved timing (wall and CPU medians), the machine's GEMM rate, FLOP counts,
  the machine description.
* ``_competitors``: one runner per framework, forward and forward+backward of one layer.
* ``_sweeps``: T, B and H sweeps, the linear-in-T check, peak BPTT memory with and without remat.
* ``report``: the README section as markdown, ``python -m experiments.benchmarks.report``.
"""
